-- Row accounting of every successful load: rows read = loaded + rejected + deduplicated,
-- with none of the counts missing.
select *
from {{ ref('load_audit') }}
where
    status = 'succeeded'
    and (
        rows_read is null
        or rows_loaded is null
        or rows_rejected is null
        or rows_deduplicated is null
        or rows_read != rows_loaded + rows_rejected + rows_deduplicated
    )
