# make demo   set up (first time) and run the main job on the embedded synthetic data
#             (WORKLOAD=chexnet or WORKLOAD=segmentation runs one of the two)
# make test   set up (first time) and run the test suite
# make setup  only the set-up; safe to re-run, rebuilds nothing that is good
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

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh --np $(NP) --runs-dir $(RUNS) --workload $(WORKLOAD)

test: setup
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: tests/ is missing or broken" >&2; exit 1; fi; \
	exit $$rc
