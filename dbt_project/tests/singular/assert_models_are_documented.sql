-- Fails with one row per missing description (see macros/documentation.sql).
{{ problems_as_rows(documentation_problems() if execute else []) }}
