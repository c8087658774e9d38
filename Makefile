# cxlrig: two commands do everything on a fresh machine.
#   make demo  - set up, build, run the main job on topologies/default.yaml
#   make test  - set up, then the whole test suite (lint, types, unit, QEMU, guests)
VENV ?= .venv
PY := $(VENV)/bin/python
CXLRIG := $(VENV)/bin/cxlrig
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck unit check-topologies bench nightly clean

setup:
	@bash scripts/setup.sh

# The main job: every reviewer scenario on kernels v1 and v2, verdict table
# in the terminal, results.json, junit.xml and report.html in runs/.
demo: setup
	$(CXLRIG) validate -q topologies/*.yaml
	$(CXLRIG) check -q topologies/default.yaml
	$(CXLRIG) run scenarios/*.yaml --variant v1 --variant v2

lint: setup
	$(VENV)/bin/ruff check orchestrator tests bench
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test: that must fail, not pass.
define run_pytest
	$(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc
endef

unit: setup
	@$(call run_pytest,tests/unit)

test: setup lint
	@$(call run_pytest,tests)

# The nightly emulated-topology run: every topology x v1, v2 x every
# scenario that applies; dashboard, JUnit, KCIDB JSON and a history entry
# (compared with the previous night's) in runs/matrix-nightly-*/.
nightly: setup
	$(CXLRIG) matrix run matrices/nightly.yaml $(NIGHTLY_ARGS)

bench: setup
	$(PY) bench/check_large.py
	$(PY) bench/boot_ready.py
	$(PY) bench/plugin_overhead.py
	$(PY) bench/delay.py
	$(PY) bench/matrix.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache runs
