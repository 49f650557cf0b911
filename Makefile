# Everything runs from the project's own virtualenv, created on first use by uv from uv.lock
# (every package pinned, the dev tools included).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv: the one on PATH, else this version installed from PyPI with pip into a venv of its own
# (no --user install: Debian's Python refuses those). `make install UV=.venv-uv/bin/uv` takes the
# pinned one even when PATH has another.
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_VENV)/bin/uv)
# Evidently is a benchmark peer only (it needs pandas < 3): it gets a venv of its own.
EVIDENTLY_VENV := .venv-evidently
EVIDENTLY_STAMP := $(EVIDENTLY_VENV)/.installed
export MLOPS_HOME ?= $(CURDIR)/.mlops
# The browser of the UI tests (tests/ui/): Debian's chromium package, driven by Playwright,
# which never downloads a browser of its own. Installed with apt when missing (root, or sudo).
CHROMIUM := /usr/bin/chromium
# The server of the shared-instance test (tests/test_shared_instance.py starts a throwaway cluster
# on 127.0.0.1): Debian's postgresql package, any version, installed with apt when missing.
PG_CTL := $(wildcard /usr/lib/postgresql/*/bin/pg_ctl)
# The guard of `mlops ui --secure` (and of the UI tests, tests/ui/, which all go through it): Debian's nginx
# package, run as the current user on a configuration under $MLOPS_HOME/ui-guard/. On a host with
# systemd the package also enables the system's own nginx on port 80: stop it if unwanted.
NGINX := /usr/sbin/nginx
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help install lock upgrade chromium postgresql nginx test-packages test-ready demo run test soak test-ui docs-screenshot docs docs-build docs-cli lint format ui ui-secure dbt-build validate bench bench-pipeline clean

help:
	@echo "make demo       generate ~100k sample applications (unless present) and run every asset"
	@echo "make test       lint and run the whole test suite (installs Debian's chromium,"
	@echo "                postgresql and nginx if missing)"
	@echo "make soak       the long fault-injection tests: mlops run killed at 20 points and 3 times in a row, dbt racing it at 7 moments, a full disk's next run"
	@echo "make test-ui    only the browser and GraphQL tests against a live 'mlops ui'"
	@echo "make docs-screenshot  re-take docs/asset-graph.png with the browser test"
	@echo "make docs       serve the documentation site on http://127.0.0.1:8000"
	@echo "make docs-build build it strictly (every link and anchor resolves) into build/site/"
	@echo "make docs-cli   regenerate docs/cli.md from the mlops command"
	@echo "make ui         serve the Dagster UI on http://127.0.0.1:3000"
	@echo "make ui-secure  the same behind nginx on https://127.0.0.1:3000: basic auth, TLS,"
	@echo "                own Host only, GraphQL mutations only by POST with JSON"
	@echo "make dbt-build  run the dbt project with the dbt CLI against \$$MLOPS_HOME"
	@echo "make validate   dg check defs, then dagster definitions validate -w workspace.yaml"
	@echo "make bench      benchmarks: mlops run at 100k/1M/10M, ingestion, features, training, drift vs Evidently"
	@echo "make bench-pipeline  only mlops run end to end at 100k, 1M and 10M applications"
	@echo "make install    the locked environment in .venv (uv sync from uv.lock; uv from PyPI if missing)"
	@echo "make lock       re-resolve uv.lock after editing pyproject.toml's dependencies"
	@echo "make upgrade    every locked package to the newest release allowed (uv lock --upgrade)"
	@echo "make clean      remove \$$MLOPS_HOME ($(MLOPS_HOME)) and build output"

$(UV_VENV)/bin/uv:
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION)

# Exactly what uv.lock pins, the project itself editable (the `mlops` command in $(BIN)); no pip
# in $(VENV). UV_PROJECT_ENVIRONMENT: a value from the caller's shell would send it elsewhere.
# --python gets the interpreter's own path: given a launcher (pyenv's shim), uv would rebuild
# $(VENV) from scratch on every sync. Then every module is compiled to bytecode, once (a fresh
# `make install` takes about 20 s in all, under 1 s after): where Python may not write its cache
# (PYTHONDONTWRITEBYTECODE, as many containers and CI machines set, or a read-only tree) each
# process would otherwise compile Dagster, dbt, scikit-learn and the platform again from source
# (a small `mlops run`: 137 CPU-s without, 73 with). tools/compile_bytecode.py leaves out the
# test suites the packages ship in folders named tests, which nothing here imports (uv's
# --compile-bytecode would compile them too, at twice the time).
define SYNC
UV_PROJECT_ENVIRONMENT="$(CURDIR)/$(VENV)" $(UV) sync --frozen --extra dev --no-python-downloads \
	--python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
$(BIN)/python tools/compile_bytecode.py --site-packages mlops_assets
endef

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC)
	touch $@

# Always synced (about 1 s when nothing changed): repairs a .venv whose interpreter is gone or
# whose packages differ from the lock, which the stamp alone would call up to date.
install: | $(UV)
	$(SYNC)
	touch $(STAMP)

# After editing the dependencies in pyproject.toml: re-resolve uv.lock, keeping the other pins.
lock: | $(UV)
	$(UV) lock --python "$(PYTHON)" --no-python-downloads

# Every pin to the newest release pyproject.toml's ranges allow; then `make test`.
upgrade: | $(UV)
	$(UV) lock --upgrade --python "$(PYTHON)" --no-python-downloads

# One apt call for every Debian package given, as root or with sudo.
define APT_INSTALL
$(SUDO) apt-get update -qq
$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(1)
endef

$(CHROMIUM):
	$(call APT_INSTALL,chromium)

chromium: $(CHROMIUM)

postgresql:
ifeq ($(PG_CTL),)
	$(call APT_INSTALL,postgresql)
endif

$(NGINX):
	$(call APT_INSTALL,nginx)

nginx: $(NGINX)

# What the test suite needs from Debian and is missing, in one apt call.
TEST_PACKAGES := $(strip $(if $(wildcard $(CHROMIUM)),,chromium) $(if $(PG_CTL),,postgresql) \
	$(if $(wildcard $(NGINX)),,nginx))

test-packages:
ifneq ($(TEST_PACKAGES),)
	$(call APT_INSTALL,$(TEST_PACKAGES))
endif

$(EVIDENTLY_STAMP): benchmarks/evidently-requirements.txt
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/pip install --quiet --upgrade pip
	$(EVIDENTLY_VENV)/bin/pip install --quiet -r benchmarks/evidently-requirements.txt
	touch $@

demo: $(STAMP)
	@if [ -d "$(MLOPS_HOME)/landing/applications" ]; then \
		echo "landing files present in $(MLOPS_HOME)/landing: not regenerating"; \
	else \
		$(BIN)/mlops generate --days 90 --rows-per-day 1100 --drift-from-day 75; \
	fi
	$(BIN)/mlops run

run: $(STAMP)
	$(BIN)/mlops run

# What comes before the tests runs side by side (apt's downloads beside the install's bytecode
# compiling, then the lint and the docs site); then two test workers, one per core, the tests
# sharing a fixture staying on one worker, the groups of costly tests handed out first
# (tests/conftest.py).
test:
	$(MAKE) --no-print-directory -j 3 --output-sync=target test-ready
	$(BIN)/pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=20

test-ready: $(STAMP) test-packages lint docs-build

soak: $(STAMP)
	$(BIN)/pytest -n 2 -m soak --timeout=3600 tests/reliability

test-ui: $(STAMP) $(CHROMIUM) $(NGINX)
	$(BIN)/pytest tests/ui

docs-screenshot: $(STAMP) $(CHROMIUM)
	MLOPS_UPDATE_DOCS_SCREENSHOT=1 $(BIN)/pytest tests/ui

# The documentation site (mkdocs.yml, pages under docs/). NO_MKDOCS_2_WARNING: mkdocs-material
# prints a banner about MkDocs 2.0 on every build otherwise.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# docs/cli.md is generated from the typer app, never edited by hand: tests/test_docs.py fails
# when it is stale.
docs-cli: $(STAMP)
	$(BIN)/typer mlops_assets.cli utils docs --name mlops --output docs/cli.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

ui: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlops ui

ui-secure: $(STAMP) $(NGINX)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlops ui --secure

dbt-build: $(STAMP)
	cd dbt_project && ../$(BIN)/dbt build --profiles-dir .

# `dg check defs`: every component instance's YAML against its type, then every definition
# loads; `dagster definitions validate` loads the same code location through workspace.yaml.
validate: $(STAMP)
	$(BIN)/mlops dbt-parse
	PATH="$(CURDIR)/$(BIN):$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)" DAGSTER_HOME="$(MLOPS_HOME)/dagster" \
		$(BIN)/dg check defs
	DAGSTER_HOME="$(MLOPS_HOME)/dagster" $(BIN)/dagster definitions validate -w workspace.yaml

# `mlops run` end to end from an empty MLOPS_HOME at 100k, 1M and 10M applications (docs
# "Benchmarks"): about 1 h 30 min on 2 cores and 12 GB of disk under benchmarks/.work/.
bench-pipeline: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py --applications 100000 1000000 10000000

bench: $(STAMP) $(EVIDENTLY_STAMP) bench-pipeline
	$(BIN)/python benchmarks/bench_drift.py --rows 300000 --rows 1000000 --columns 20 --repeat 3
	$(BIN)/python benchmarks/bench_drift.py --rows 10000000 --columns 100 --no-evidently
	$(BIN)/python benchmarks/bench_landing.py --days 90 --rows-per-day 11000
	$(BIN)/python benchmarks/bench_features.py --rows 1000000
	$(BIN)/python benchmarks/bench_training.py --rows 100000
	$(BIN)/python benchmarks/bench_training.py --rows 1000000 --no-speedup

clean:
	rm -rf "$(MLOPS_HOME)" dbt_project/target dbt_project/logs build *.egg-info
