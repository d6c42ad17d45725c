# Everything a newcomer or CI needs: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What the tests need (the dev extra), and what running needs (the package alone).
STAMP  := $(VENV)/.installed
RUN    := $(VENV)/.installed-run

.PHONY: run test lint format bench clean chart-files

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN)

run: $(RUN)
	$(BIN)/task-sidecar serve

test: $(STAMP)
	scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/decide.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The monitoring mixin (sidecar/mixin): generated files are committed; the tests fail when
# they are stale. `make mixin` regenerates everything: dashboard skeletons and JSON, the
# rules for the defaults, the chart's templates, values block and schema.
.PHONY: dashboards alerting mixin

dashboards: $(STAMP)
	$(BIN)/python -m grafana.dashboards
	$(BIN)/python scripts/sync-chart-files.py

alerting: $(STAMP)
	$(BIN)/python -m alerting
	$(BIN)/python scripts/sync-chart-files.py
	scripts/install-test-deps.sh
	promtool check rules alerting/task-sidecar.rules.yaml
	cd alerting && promtool test rules rules.test.yaml
	amtool check-config alerting/alertmanager.yml

mixin: dashboards alerting

chart-files: $(STAMP)
	$(BIN)/python scripts/sync-chart-files.py
