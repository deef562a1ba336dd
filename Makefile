# `make test` and `make demo` work from a fresh clone: they create .venv and install pinned
# dependencies into it on first use (the stamp file is refreshed when the pins change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo models clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the demo's own folder (densevlm-demo/) is replaced on every run
demo: $(STAMP)
	$(BIN)/densevlm demo --overwrite

models: $(STAMP)
	bash scripts/build_models.sh

clean:
	rm -rf $(VENV) .pytest_cache
