# deskbridge, in two commands:
#   make run    start deskbridge on its embedded defaults (deskbridge.example.toml)
#   make test   run the whole test suite (ruff and mypy first, then pytest)
# Each creates .venv on first use and installs the locked versions from requirements.lock.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.deskbridge-installed

.PHONY: run test lint bench lock clean

run: $(STAMP)
	$(BIN)/deskbridge run --config deskbridge.example.toml

test: lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check integrations webhook_server.py migrations tests bench
	$(BIN)/mypy

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve the newest versions allowed by pyproject.toml and pin them in requirements.lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade -e '.[dev]'
	echo "# Pinned by 'make lock' from pyproject.toml; 'make run' and 'make test' install exactly these." > requirements.lock
	.lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' >> requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
