"""Transformation: the dbt project, wired into Dagster in this one place."""
