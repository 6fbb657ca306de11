# `make test` and `make demo` each bootstrap .venv by themselves on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sggraph-installed

.PHONY: test lint demo bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch 2.13.0 first: on this machine that takes the CPU build on disk; the project's torch range is then
	@# already satisfied. From PyPI on Linux a plain install is the CUDA build: for the CPU one run
	@# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu test`.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# ruff (pyflakes, isort, bugbear, simplify, complexity) and the import-linter layer contracts
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	LINT_IMPORTS=$(CURDIR)/$(VENV)/bin/lint-imports .ci/lint-imports

demo: $(STAMP)
	$(VENV)/bin/sggraph demo

bench: $(STAMP)
	$(VENV)/bin/sggraph bench

clean:
	rm -rf $(VENV) build *.egg-info
