# Two commands, each setting itself up on a fresh machine:
#   make demo   the main job end to end on the embedded default
#   make test   the test suite (CPU only; Triton kernels run in the interpreter), the C++ runtime built first
#   make cpp    the C++ runtime (docs/cpp.md): libd4rt_runtime, d4rt-query, its tests, into build/cpp
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean gpu-check compat compat-install cpp

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); $(PY) scripts/demo.py; rc=$$?; \
	echo "make demo: $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

test: $(STAMP) cpp
	@start=$$(date +%s); ctest --test-dir $(CPP_BUILD) --output-on-failure && $(PY) -m pytest -q tests; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s of tests (exit $$rc)"; exit $$rc

# The C++ runtime against the libtorch of the venv's torch wheel (needs cmake, g++, nlohmann-json3-dev,
# libgtest-dev). Paths are the repository's even when this Makefile is reached through a link (docs/cpp.md's
# commands run in a scratch folder); a second call only rebuilds what changed.
ROOT      := $(patsubst %/,%,$(dir $(realpath $(firstword $(MAKEFILE_LIST)))))
CPP_BUILD ?= $(ROOT)/build/cpp
CPP_JOBS  ?= 2
cpp:
	@$(MAKE) -s -C $(ROOT) install
	@mkdir -p $(CPP_BUILD)
	@test -f $(CPP_BUILD)/CMakeCache.txt || cmake -S $(ROOT) -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$(cd $(ROOT) && $(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
		> $(CPP_BUILD).configure.log 2>&1 || { cat $(CPP_BUILD).configure.log; exit 1; }
	@cmake --build $(CPP_BUILD) -j $(CPP_JOBS) > $(CPP_BUILD).build.log 2>&1 || { cat $(CPP_BUILD).build.log; exit 1; }
	@test -x $(CPP_BUILD)/d4rt-query && echo "C++ runtime: $(CPP_BUILD)/d4rt-query"

clean:
	rm -rf $(VENV) build *.egg-info demo_out

# One call on a GPU machine (issue #12, docs/gpu.md): every owed GPU number into $(OUT).
# `make gpu-check PART=2` runs what the first window did not fit; ARGS=--cpu-smoke dry-runs it here.
OUT  ?= gpu_out
PART ?= 1
gpu-check:
	OUT=$(OUT) bash scripts/gpu_check.sh --part $(PART) $(ARGS)

# A separate venv with the GPU machine's versions (Python 3.12, torch 2.11.0 = the CUDA build from PyPI,
# about 5 GB, triton 3.6.0, numpy 2.5.2): the kernel (interpreter) and export tests under them. Not run in CI.
COMPAT_VENV   ?= .venv-compat
COMPAT_PYTHON ?= $(firstword $(wildcard /root/.pyenv/versions/3.12*/bin/python3) python3.12)
COMPAT_STAMP  := $(COMPAT_VENV)/.installed
$(COMPAT_STAMP): pyproject.toml constraints-h200.txt
	test -x $(COMPAT_VENV)/bin/python || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install -q -c constraints-h200.txt -e ".[all]" pytest  # no serve: not on that machine
	touch $(COMPAT_STAMP)

compat-install: $(COMPAT_STAMP)

compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(torch|triton|numpy|onnx|onnxruntime|onnxscript|lightning|safetensors)=='
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_kernels_model.py \
		tests/test_kernels_benchmark.py tests/test_gpu_check.py tests/test_export.py
