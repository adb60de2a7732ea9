# make demo / make test: each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 CPU build; for CUDA install a CUDA torch into $(VENV) before `make`.
TORCH ?= torch==2.13.0

.PHONY: venv test lint demo multi30k clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	# fairseq-fixed compiles against the torch in the venv: install torch, numpy, cython
	# first and build without isolation, so pip does not fetch a second torch.
	$(PY) -m pip install "$(TORCH)" numpy cython
	$(PY) -m pip install --no-build-isolation -e ".[test,plot,deploy]"
	touch $@

# tests run one process per core (pytest-xdist); whole files per process, so a module's shared
# fixture (the demo's and the benchmark's end-to-end runs) is built once
test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests -q -n auto --dist loadfile --durations=25

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(VENV)/bin/seqkd-demo

# the paper's Table 1 on Multi30k, docs/results/multi30k-v2.md (about 7 hours on 2 CPU cores, resumable)
# on the corpus in MULTI30K: ../shared/data/multi30k-en-de beside the repository when it is
# there, else runs/data/multi30k-en-de, which examples/multi30k/get_data.sh downloads from the
# public multi30k/dataset repository once; either way every file is checked by its SHA256
MULTI30K ?= $(firstword $(wildcard ../shared/data/multi30k-en-de) runs/data/multi30k-en-de)
multi30k: venv
	examples/multi30k/get_data.sh $(MULTI30K)
	examples/multi30k/run_table1.sh $(MULTI30K)

clean:
	rm -rf $(VENV) demo-out *.egg-info
