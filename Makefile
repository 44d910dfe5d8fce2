# Two entry points do all set-up on a fresh machine:
#   make demo   -> install, then cluster a real sample in the embedded Qdrant Edge store
#   make test   -> install, then run the test suite (what CI runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[cpu,train,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/qdrant-lander demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

.PHONY: install demo test
