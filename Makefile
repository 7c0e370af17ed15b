# The project's two commands: `make test` and `make demo` (LEAF beside the baselines practitioners
# run, `leaf-sk benchmark Kalunga2016`). Both set up .venv on a fresh machine. `make pretrain-demo`
# STR-pretrains a small Tower for a few minutes and prints its loss curve.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := ../shared/data/mne_data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MOABB_DOWNLOAD_PROVIDER := upstream
ifneq ($(wildcard $(SHARED_DATA)),)
export MNE_DATA ?= $(abspath $(SHARED_DATA))
endif

.PHONY: install test test-all demo pretrain-demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: its CPU build is what the package's torch range then accepts
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,offline,moabb,distributed,viz]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) examples/demo.py

pretrain-demo: $(STAMP)
	$(PY) examples/pretrain_demo.py

clean:
	rm -rf $(VENV) .pytest_cache
