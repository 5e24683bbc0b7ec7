# Every target creates the virtual environment it needs; `make run` and `make test` are all a newcomer types.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest faults rabbitmq venv clean

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

run: venv rabbitmq
	@VENV=$(VENV) deploy/local/run-dev

test: lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	$(BIN)/pytest

faults: venv
	@deploy/local/ensure-rabbitmq "$${TEST_AMQP_URL:-}"
	$(BIN)/pytest -m faults -s tests/faults

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
