"""retention_pipeline: customer-retention analytics on Dagster, dbt and DuckDB."""
