# Every target creates the virtual environment it needs; `make run` and `make test` are all a newcomer types.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Test processes side by side: most tests wait on the broker, not on a core.
TEST_PROCESSES ?= 2
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest faults chaos bench bench-quick docs docs-serve rabbitmq postgres venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

rabbitmq:
	@deploy/local/ensure-rabbitmq "$${AMQP_URL:-}"

postgres:
	@deploy/local/ensure-postgres --optional "$${DEDUPE_DATABASE_URL:-}"

run: venv rabbitmq postgres
	@VENV=$(VENV) deploy/local/run-dev

test: lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	@deploy/local/ensure-postgres "$${TEST_POSTGRES_URL:-}"
	@deploy/local/ensure-chromium --install >/dev/null
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadgroup

faults: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	$(BIN)/pytest -m faults -s tests/faults

# A seeded run of the whole system under random faults; CHAOS_SECONDS (120), CHAOS_SEED.
chaos: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	@deploy/local/ensure-postgres "$${TEST_POSTGRES_URL:-}"
	$(BIN)/python -m tests.chaos

bench: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	@deploy/local/ensure-postgres "$${TEST_POSTGRES_URL:-}"
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "wrk is not installed; using the built-in load generator"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m tests.bench

# The performance ratios alone (one round each, 5 s a point): about two minutes.
bench-quick: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	@deploy/local/ensure-postgres "$${TEST_POSTGRES_URL:-}"
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "wrk is not installed; using the built-in load generator"
	$(BIN)/python -m tests.bench quick

docs: venv
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,docs]'
	$(BIN)/mkdocs build --strict

docs-serve: venv
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,docs]'
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
