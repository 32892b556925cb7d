# Two commands a newcomer types on a fresh machine with only Python:
#   make run    set up, then run the whole system (careplan up: SQLite + embedded nats-server)
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run demo test setup contracts bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/careplan up

demo: $(STAMP)
	$(BIN)/careplan demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

contracts: $(STAMP)
	$(BIN)/careplan contracts generate

bench: $(STAMP)
	$(BIN)/careplan bench store --backend sqlite
	$(BIN)/careplan bench store --backend postgres
	$(BIN)/careplan bench relay
	$(BIN)/careplan bench crisis
	$(BIN)/careplan bench api
	$(BIN)/careplan bench audit
	$(BIN)/careplan bench views --backend sqlite
	$(BIN)/careplan bench views --backend postgres
	$(BIN)/careplan bench webhook
	$(BIN)/careplan bench scale --backend sqlite
	$(BIN)/careplan bench scale --backend postgres

clean:
	rm -rf $(VENV) careplan-data .pytest_cache .hypothesis
