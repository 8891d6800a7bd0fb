# Everything runs inside .venv, created on first use with the pinned CPU build of torch.
# (An unpinned torch pulls a multi-GB CUDA build; GPU installs: docs/install.md.)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0

.PHONY: venv train test bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(TORCH)
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

## The main job: the paper's PNA model with heads H,C,M on the built-in FePt dataset.
## It replaces the previous `make train` run in runs/latest (a plain `hydradgl train` would refuse).
train: venv
	$(VENV)/bin/hydradgl train --conv pna --heads H,C,M --overwrite

## Lint and types of the package, then the tests (the import-layering contracts run in tests/test_layering.py).
test: venv
	$(VENV)/bin/ruff check hydradgl plugins
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: venv
	$(VENV)/bin/python benchmarks/bench_data.py
	$(VENV)/bin/python benchmarks/bench_model.py
	$(VENV)/bin/python benchmarks/bench_train.py

clean-venv:
	rm -rf $(VENV)
