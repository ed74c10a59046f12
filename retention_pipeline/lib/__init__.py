"""Code shared by the Dagster domains and the command line."""
