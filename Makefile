# learning_pipelines: `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# How torch is installed, before the project: the CPU build. Elsewhere than this project's machines, e.g.
# make TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" test
TORCH_INSTALL ?= torch==2.13.0
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: install demo test dev bench clean-demo promtool pg-client chromium screenshots metrics stack stack-stop stack-restart-workers

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build first; any other torch request would pull a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH_INSTALL)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/alembic upgrade head
	$(BIN)/learning-pipelines demo --learners 1000

# promtool and prometheus (Debian package `prometheus`): the alert rules' unit tests and the real-server test.
promtool:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing promtool and prometheus (Debian package prometheus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

# pg_dump, pg_restore and psql (Debian package postgresql-client) back up and restore the warehouse.
pg-client:
	@command -v pg_dump >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 || { \
	  echo "installing pg_dump, pg_restore, psql (Debian package postgresql-client)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql-client >/dev/null; }

# chromium (Debian package chromium): headless screenshots of the UI for the README.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package chromium)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The README's pictures of the UI (docs/*.png), over the demo's instance: run `make demo` first.
screenshots: install chromium
	$(BIN)/python docs/take_screenshots.py

test: install promtool pg-client
	$(BIN)/dg check defs
	$(BIN)/bandit -r learning_pipelines -ll -ii -q
	$(BIN)/python -m pytest -q -n auto

dev: install
	$(BIN)/alembic upgrade head
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The production topology on this machine: PostgreSQL databases `warehouse` and `dagster` (created and migrated),
# code server, daemon, webserver on 127.0.0.1:3000, 2 Celery workers on RabbitMQ, metrics exporter; pids and logs
# under .stack/. LEARNING_PIPELINES_STACK_POSTGRES names another PostgreSQL server (password in PGPASSWORD).
stack: install
	$(BIN)/learning-pipelines stack start --run-dir .stack

stack-stop:
	@test -x $(BIN)/learning-pipelines && $(BIN)/learning-pipelines stack stop --run-dir .stack || true

# Workers keep the code they imported: restart them after a code change (the UI's Reload updates the code server).
stack-restart-workers:
	$(BIN)/learning-pipelines stack restart-workers --run-dir .stack

metrics: install
	$(BIN)/learning-pipelines metrics

bench: install
	@ls bench/*.py >/dev/null 2>&1 && for script in bench/*.py; do $(BIN)/python $$script || exit 1; done || echo "no benchmarks yet"

clean-demo:
	rm -rf dagster_home/warehouse.db* dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs dagster_home/.telemetry dagster_home/.nux
