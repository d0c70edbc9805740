# metalab: `make demo` brings up a sandbox lab; `make test` runs everything CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
METALAB_CACHE ?= /var/cache/metalab
export METALAB_CACHE
export PIP_CACHE_DIR := $(METALAB_CACHE)/pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Debian packages the sandboxes and tests need on the machine running them.
APT_PACKAGES := debootstrap systemd-container qemu-system-x86 qemu-utils tinyproxy iproute2 \
	openssh-client e2fsprogs rsync curl ca-certificates chromium fonts-dejavu-core nftables \
	checkpolicy semodule-utils restic acl
SCENARIOS ?= default lab metal
DEMO_NAME ?= demo
# MITOGEN=1: the sandbox, molecule and e2e targets run Ansible with Mitogen for Ansible's strategy (the optional
# extra, installed in the venv). The variables are computed by the venv's python when the recipe runs (the venv
# may not exist yet when make starts), with metalab.labctl.runner.mitogen_env, the helper labctl --mitogen uses.
MITOGEN ?=
define MITOGEN_PY
import shlex, sys
from metalab.labctl import runner
try:
    env = runner.mitogen_env()
except runner.MitogenNotInstalled as exc:
    sys.exit(f"MITOGEN=1: {exc}")
print(" ".join(f"export {k}={shlex.quote(v)};" for k, v in env.items()))
endef
ifeq ($(MITOGEN),1)
export MITOGEN_PY
WITH_MITOGEN = exports=$$($(VENV)/bin/python -c "$$MITOGEN_PY"); eval "$$exports"; \
	echo "MITOGEN=1: ANSIBLE_STRATEGY=$$ANSIBLE_STRATEGY ANSIBLE_STRATEGY_PLUGINS=$$ANSIBLE_STRATEGY_PLUGINS";
endif

.PHONY: help deps venv forget-installed-collection labextension lint unit sandbox-tests molecule e2e bench test _test demo demo-down clean-sandboxes clean

help:
	@echo "make demo       bring up a sandbox lab host, provision it, print how to reach it"
	@echo "make demo-down  remove the demo sandbox"
	@echo "make test       everything CI runs: lint, unit, sandbox, molecule ($(SCENARIOS)) with browser end to end"
	@echo "make lint | unit | sandbox-tests | molecule | e2e   one layer"
	@echo "make bench      benchmarks (BENCH_ARGS=--quick for a short run)"
	@echo "make labextension  rebuild the runtime image's JupyterLab extension bundle (needs node 20, npm)"
	@echo "MITOGEN=1       sandbox-tests, molecule, e2e (and test) run Ansible with Mitogen for Ansible"

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.metalab-stamp

$(VENV)/.metalab-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,mitogen]'
	touch $@

# molecule and ansible-lint install a copy of the collection under ~/.ansible; a copy left by an older
# checkout would shadow this one, so it is removed first (the tools make a fresh one when they need it).
forget-installed-collection:
	rm -rf $(HOME)/.ansible/collections/ansible_collections/metalab .ansible/collections/ansible_collections/metalab

lint: venv forget-installed-collection
	yamllint -s .
	ansible-lint
	ruff check src plugins tests benchmarks tools
	ruff format --check src plugins tests benchmarks tools
	mypy
	python tools/role_docs.py --check

# The prebuilt bundle is committed (make test and lab admins need no node); this rebuilds it from its source.
labextension:
	$(PYTHON) tools/labextension.py

unit: venv
	pytest -q tests/unit

sandbox-tests: deps venv
	$(WITH_MITOGEN) pytest -q tests/sandbox

# The scenarios in SCENARIOS_ALONGSIDE (the VM one: qemu keeps one core busy, while an nspawn scenario's hosts mostly
# wait) run in the background next to the last of the others, their output printed when they end; the others run one
# after the other. Every scenario started is waited for, so no sandbox outlives this target's end.
SCENARIOS_ALONGSIDE ?= metal
molecule: deps venv forget-installed-collection
	$(WITH_MITOGEN) front="$(filter-out $(SCENARIOS_ALONGSIDE),$(SCENARIOS))"; back="$(filter $(SCENARIOS_ALONGSIDE),$(SCENARIOS))"; \
	last=$${front##* }; logs=$(METALAB_CACHE)/logs; mkdir -p $$logs; rc=0; pids=""; \
	for scenario in $$front; do \
		if [ "$$scenario" = "$$last" ]; then \
			for other in $$back; do \
				echo "molecule: $$other runs alongside $$last (output: $$logs/molecule-$$other.log, shown when it ends)"; \
				molecule test -s $$other > $$logs/molecule-$$other.log 2>&1 & pids="$$pids $$!:$$other"; \
			done; back=""; \
		fi; \
		molecule test -s $$scenario || { rc=1; break; }; \
	done; \
	for other in $$back; do [ $$rc -ne 0 ] || molecule test -s $$other || rc=1; done; \
	for entry in $$pids; do \
		wait $${entry%%:*} && status=passed || { status=FAILED; rc=1; }; \
		echo "=== molecule $${entry#*:} (ran alongside): $$status; its output:"; cat $$logs/molecule-$${entry#*:}.log; \
	done; \
	exit $$rc

# The browser tests (Playwright + Debian's chromium) run in the default scenario's verify step,
# against the lab host that scenario converged: this target runs just that scenario.
e2e: deps venv
	$(WITH_MITOGEN) molecule test -s default

# Reproducible performance runs: a table on stdout, JSON under benchmarks/results/ (not part of `make test`).
bench: deps venv
	python benchmarks/run.py $(BENCH_ARGS)

# CI entry point: whatever fails, no sandbox is left behind. Tests whose requirement (root, nft) is missing fail here.
test: export METALAB_REQUIRE_ALL := 1
test: deps venv
	@rc=0; $(MAKE) --no-print-directory _test || rc=$$?; \
	$(MAKE) --no-print-directory clean-sandboxes; \
	exit $$rc

_test: lint unit sandbox-tests molecule

demo: deps venv
	labctl sandbox up $(DEMO_NAME) --json > /dev/null
	labctl sandbox inventory $(DEMO_NAME) > $(METALAB_CACHE)/demo-inventory.yml
	ansible-playbook -i $(METALAB_CACHE)/demo-inventory.yml -i inventory/sandbox/demo.yml playbooks/site.yml
	labctl session stop alice -i $(METALAB_CACHE)/demo-inventory.yml > /dev/null
	labctl session start alice -i $(METALAB_CACHE)/demo-inventory.yml
	@host=$$(labctl sandbox list --json | python3 -c 'import json,sys; print(next(s["ansible_host"] for s in json.load(sys.stdin) if s["name"] == "$(DEMO_NAME)"))'); \
	password=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))'); \
	echo "$$password" | labctl users passwd alice --stdin -i $(METALAB_CACHE)/demo-inventory.yml > /dev/null; \
	token=$$(labctl session token alice -i $(METALAB_CACHE)/demo-inventory.yml); \
	echo; echo "alice's JupyterLab (studio-lab-user) is running on sandbox $(DEMO_NAME):"; \
	echo "  portal:   https://$$host/  (log in as alice / $$password, then Open JupyterLab)"; \
	echo "  API:      curl -k -H 'Authorization: token $$token' https://$$host/user/alice/api/status"; \
	echo "  token:    $$token"; \
	echo "  The certificate is self-signed. From another machine: ssh -L 8443:$$host:443 root@this-machine,"; \
	echo "  then https://localhost:8443/. 'make demo-down' removes the sandbox."

demo-down: venv
	labctl sandbox down $(DEMO_NAME)

clean-sandboxes:
	-$(VENV)/bin/labctl sandbox down --all

clean: clean-sandboxes
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
