# The common verbs. Each installs what it needs into .venv from the committed lock file.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null) dbt_project/dbt_project.yml
export DAGSTER_HOME := $(CURDIR)/.dagster

.PHONY: install demo dev test lint format bench bench-clv clean

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	# Bytecode at install time: with PYTHONDONTWRITEBYTECODE set (as on our machines) every
	# process would otherwise recompile Dagster and dbt from source, ~6 s each.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# dbt's manifest, parsed once here rather than on every Dagster load.
$(MANIFEST): $(STAMP) $(DBT_SOURCES)
	cd dbt_project && ../$(BIN)/dbt parse --profiles-dir . --quiet

install: $(STAMP) $(MANIFEST)
	mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install
	$(BIN)/retention-pipeline demo

dev: install
	$(BIN)/dagster dev -w workspace.yaml

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd dbt_project && RETENTION_DUCKDB_PATH=:memory: ../$(BIN)/sqlfluff lint models tests --processes 2

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cd dbt_project && RETENTION_DUCKDB_PATH=:memory: ../$(BIN)/sqlfluff fix models tests --processes 2

# The benchmark of record at 1M and 10M orders; add 100M with
# .venv/bin/python -m benchmarks.pipeline --include-100m
bench: install
	$(BIN)/python -m benchmarks.pipeline

# The CLV fit alone: BG/NBD + Gamma-Gamma on a million customers against lifetimes.
bench-clv: install
	$(BIN)/python -m benchmarks.pipeline --clv

clean:
	rm -rf $(VENV) dbt_project/target dbt_project/logs .dagster data/demo data/*.duckdb* data/published
