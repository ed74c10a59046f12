import sys
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from packaging.version import Version

from retention_pipeline.defs.transformation.assets import dbt_project
from retention_pipeline.lib.settings import DBT_PROJECT_DIR


class LocalDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without two start-up costs we do not need (~13 s a run here):
    it shells out `dbt --version`, which also asks PyPI for the latest release, and it
    opens a dbt adapter in this process, used only for metadata we do not fetch."""

    @cached_property
    def _cli_version(self) -> Version:
        return Version(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "dbt": LocalDbtCliResource(
                project_dir=dbt_project,
                profiles_dir=str(DBT_PROJECT_DIR),
                # The dbt installed beside this interpreter, whatever PATH says.
                dbt_executable=str(Path(sys.executable).parent / "dbt"),
            )
        }
    )
