# make demo   set up (first time) and run the main job on the embedded synthetic data
#             (WORKLOAD=chexnet or WORKLOAD=segmentation runs one of the two)
# make test   set up (first time) and run the test suite
# make setup  only the set-up; safe to re-run, rebuilds nothing that is good
# make check-gpu-build  prove on a CPU machine that horovod's GPU build compiles (docs/GPU.md;
#             GPU_BUILD_DIR=/tmp/medimg-gpu-build, a throwaway venv of its own; tens of minutes)
# make gpu-check  the checks that need a GPU machine (scripts/gpu_check.sh; ARGS are passed on)
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
NP ?= 2
WORKLOAD ?= all
RUNS ?= runs
# Open MPI refuses to start as root unless told; containers and CI run as root.
export OMPI_ALLOW_RUN_AS_ROOT ?= 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM ?= 1
export VENV

GPU_BUILD_DIR ?= /tmp/medimg-gpu-build
ARGS ?=

.PHONY: setup demo test check-gpu-build gpu-check
setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh --np $(NP) --runs-dir $(RUNS) --workload $(WORKLOAD)

test: setup
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: tests/ is missing or broken" >&2; exit 1; fi; \
	exit $$rc

check-gpu-build:
	@bash scripts/check_gpu_build.sh "$(GPU_BUILD_DIR)"

gpu-check:
	@bash scripts/gpu_check.sh $(ARGS)
