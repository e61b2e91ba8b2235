# The two commands: `make run` and `make test` (plus `make soak`, the long property run). Both work on a fresh machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PYTHONUNBUFFERED := 1

.PHONY: run test soak install system-deps serve check lint typecheck pytest bench fmt clean-var

## run: install, start private PostgreSQL + Redis under var/, migrate, demo data, web + worker + beat
run: install
	@$(PY) -m config.devservers run -- $(MAKE) --no-print-directory serve

## test: install (incl. Chromium), throwaway PostgreSQL + Redis, then ruff, import-linter, mypy, pytest
test: install system-deps
	@$(PY) -m config.devservers run --tmp -- $(MAKE) --no-print-directory check

## soak: the ledger's property test (tests/wallets/test_ledger_properties.py) at
## 2,000 examples of 50 steps instead of 200, on throwaway servers (long: ~10x `make test`'s run of it)
SOAK_EXAMPLES ?= 2000
soak: install
	@$(PY) -m config.devservers run --tmp -- env LEDGER_PROPERTY_EXAMPLES=$(SOAK_EXAMPLES) \
		$(VENV)/bin/pytest tests/wallets/test_ledger_properties.py -q -s $(PYTEST_ARGS)

install: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
	uv sync --frozen
	@touch $@

# What the suite needs outside .venv: Debian's Chromium (browser tests) and poppler
# (PDF checks), and localstripe, the fake Stripe server, in its own .venv-localstripe.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v pdftoppm >/dev/null; then \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium poppler-utils >/dev/null; \
	fi
	@bash .ci/localstripe.sh install

# --- pieces (expect DATABASE_URL/REDIS_URL, as set by the two commands above) ---
serve:
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo
	@echo
	@echo "  Admin:   http://127.0.0.1:$(PORT)/admin/    login admin / admin"
	@echo "  Portal:  http://127.0.0.1:$(PORT)/portal/   logins alice / alice, bob / bob, charlie / charlie, dana / dana"
	@echo "  API:     http://127.0.0.1:$(PORT)/api/v1/docs   demo key: Authorization: Bearer ppk_demo-local-only-not-for-production"
	@echo "  A process that exits is started again; the others keep running."
	@echo "  Ctrl-C stops the web server, the worker, the beat, PostgreSQL and Redis."
	@echo
	PORT=$(PORT) DEBUG=$${DEBUG:-true} HTTPS=$${HTTPS:-false} $(PY) -m config.supervise -f Procfile

check: lint typecheck pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck:
	$(VENV)/bin/mypy .

pytest:
	$(VENV)/bin/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

fmt:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: the benchmarks in bench/, each on throwaway servers
bench: install
	@$(PY) -m config.devservers run --tmp -- $(PY) bench/drawdown.py

clean-var:
	-$(PY) -m config.devservers down
	rm -rf var
