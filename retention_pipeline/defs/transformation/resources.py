import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from retention_pipeline.defs.transformation.assets import dbt_project
from retention_pipeline.lib.settings import DBT_PROJECT_DIR


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "dbt": DbtCliResource(
                project_dir=dbt_project,
                profiles_dir=str(DBT_PROJECT_DIR),
                # The dbt installed beside this interpreter, whatever PATH says.
                dbt_executable=str(Path(sys.executable).parent / "dbt"),
            )
        }
    )
