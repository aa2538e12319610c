# The two commands of the README:
#   make demo   set up .venv and run the main job on the embedded default (offline, CPU)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attiqa-installed

.PHONY: setup test test-fast demo clean help-texts

setup: $(STAMP)

# A fresh virtual environment, so pip resolves the registry's torch build (with which
# torchvision imports) rather than a local CPU-only wheel that may sit in PIP_FIND_LINKS.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[all,dev,demo]'
	$(PY) -c "import torch, torchvision, timm, open_clip, kornia, lpips; print('attiqa env: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The suite without the multi-process (torchrun) runs, for quick local iterations; CI runs `make test`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(VENV)/bin/attiqa-enhance demo --out runs/demo --overwrite

# attiqa-pretrain SUBCOMMAND --help prints texts rendered in advance (no torch import):
# rewrite them after changing a subcommand's options or description.
help-texts: $(STAMP)
	$(PY) -c "from pretrain.cli import write_help_texts; print(write_help_texts())"

clean:
	rm -rf $(VENV) runs build *.egg-info
