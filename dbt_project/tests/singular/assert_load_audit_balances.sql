-- Row accounting of every successful load: read = loaded + rejected + deduplicated.
select *
from {{ ref('load_audit') }}
where status = 'succeeded' and not is_balanced
