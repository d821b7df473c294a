# Two commands, each setting itself up on a fresh machine:
#   make demo   the main job end to end on the embedded default
#   make test   the test suite (CPU only; Triton kernels run in the interpreter)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); $(PY) scripts/demo.py; rc=$$?; \
	echo "make demo: $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

test: $(STAMP)
	@start=$$(date +%s); $(PY) -m pytest -q tests; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s of tests (exit $$rc)"; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info demo_out
