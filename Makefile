# The verbs humans and CI use. Everything installs itself on first use; state lives in .stack/.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
UV := .stack/tools/bin/uv
VENV := .venv/bin

.PHONY: help install run up down test check fmt bench clean

help:
	@echo "make run    - install, start Kafka + Postgres + every service on http://127.0.0.1:8080 (Ctrl-C stops all)"
	@echo "make test   - install, check, start what the tests need, run every test"
	@echo "make up     - the same stack in the background; 'make down' stops it"
	@echo "make check  - ruff, mypy, promtool (alert rules), offline checks of compose.yaml and deploy/k8s"
	@echo "make bench  - load the running stack and print/write the numbers (bench/results/)"

$(UV):
	@mkdir -p .stack
	python3 -m venv .stack/tools
	.stack/tools/bin/pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

install: $(UV)
	@$(UV) sync --all-packages --frozen -q

run: install
	@scripts/run.sh foreground

up: install
	@scripts/run.sh up

down:
	@scripts/run.sh down

check: install
	$(VENV)/ruff format --check .
	$(VENV)/ruff check .
	$(VENV)/mypy
	scripts/prometheus.sh check
	scripts/check-deploy.sh

fmt: install
	$(VENV)/ruff format .
	$(VENV)/ruff check --fix .

test: check
	$(VENV)/pytest

bench: install
	@scripts/bench.sh

clean: down
	rm -rf .stack .venv
