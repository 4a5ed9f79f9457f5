# Everything bootstraps from nothing: `make test` and `make run` create .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

# the newest Python >= 3.11 on this machine (pyenv installs included)
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 \
	$$(ls -d $$HOME/.pyenv/versions/3.1[1-9]*/bin/python3 2>/dev/null | sort -V -r) python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: install test run bench crds k8s clean

# setup.py compiles the normaliser modules (mypyc) and its C paths: a change to them reinstalls
NORMALISER := $(addprefix anysentry/events/,observer.py redact.py ids.py kinds.py timefmt.py _sha1.c _scan.c)
$(VENV)/.installed: pyproject.toml setup.py $(NORMALISER)
	@test -n "$(PYTHON)" || { echo "no Python >= 3.11 found"; exit 1; }
	@echo "using $(PYTHON) ($$($(PYTHON) --version))"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

run: $(VENV)/.installed
	$(VENV)/bin/anysentry serve --demo examples/resources

bench: $(VENV)/.installed
	$(PY) bench/judge.py
	$(PY) bench/store.py
	$(PY) bench/ingest.py
	$(PY) bench/queries.py
	$(PY) bench/ops.py
	$(PY) bench/guard.py

crds: $(VENV)/.installed
	$(VENV)/bin/anysentry crds

# builds (once, cached outside the repo) the local Kubernetes control plane the operator tests use
k8s:
	bash tools/k8s/build-control-plane.sh

clean:
	rm -rf $(VENV) .anysentry build anysentry/events/*.so anysentry/events/_normaliser.json
