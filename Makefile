# learning_pipelines: `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# How torch is installed, before the project: the CPU build. Elsewhere than this project's machines, e.g.
# make TORCH_INSTALL="torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu" test
TORCH_INSTALL ?= torch==2.13.0
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: install demo test test-faults test-latest lock dev bench clean-demo promtool pg-client chromium screenshots metrics stack stack-stop stack-restart-workers

# requirements.lock: every package the tests passed with, at its exact version (torch apart, see TORCH_INSTALL).
# A changed lock or pyproject.toml builds the venv afresh, so it holds the lock and nothing else.
$(STAMP): pyproject.toml requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# The CPU build first; any other torch request would pull a multi-GB CUDA build. Its own dependencies at the
	# lock's versions.
	$(BIN)/python -m pip install -q -c requirements.lock $(TORCH_INSTALL)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	# Fails when pyproject.toml asks for what the lock does not hold (tests/ops/test_lock.py says which).
	$(BIN)/python -m pip check
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

# The README's pictures (docs/*.png), over the demo's instance: run `make demo` first. The UI's pages, then the
# dashboard drawn from its queries on a real Prometheus scraping the demo (Grafana is not installable here).
screenshots: install chromium promtool
	$(BIN)/python docs/take_screenshots.py
	$(BIN)/python docs/render_dashboard.py

test: install promtool pg-client
	$(BIN)/ruff check .
	$(BIN)/dg check defs
	$(BIN)/bandit -r learning_pipelines -ll -ii -q
	$(BIN)/python -m pytest -q -n auto

# The whole fault-injection matrix (tests/support/faults.py): a learner forgotten, a session terminated, a process killed at
# every pause point of every writer of learners' rows, on SQLite and PostgreSQL. `make test` runs one point per writer.
test-faults: install
	$(BIN)/python -m pytest -q -n auto --faults -m faults

# The UI on the demo's instance. Its first-visit community dialog is marked as seen first (as the dialog's "Skip"
# records it in $DAGSTER_HOME/.nux), so the pages open uncovered.
dev: install
	$(BIN)/alembic upgrade head
	$(BIN)/python -c "from dagster._core.nux import set_nux_seen; set_nux_seen()"
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

# The newest versions pyproject.toml's ranges allow (torch still the CPU build), in a throw-away venv, through the
# quick test loop: run it before updating the lock and when a dependency announces a release (README: "Dependencies").
LATEST := .venv-latest
test-latest: promtool pg-client
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q $(TORCH_INSTALL)
	$(LATEST)/bin/python -m pip install -q -e '.[dev,k8s]'
	$(LATEST)/bin/python -m pip list --format=freeze --exclude-editable
	$(LATEST)/bin/python -m pytest -q -n auto -m 'not slow' -p no:cacheprovider --ignore tests/ops/test_lock.py

# requirements.lock from the venv `make test-latest` built and passed: its packages at their versions, less torch
# (TORCH_INSTALL's) and the CUDA packages a torch from PyPI would bring. Then `make test` installs and checks it.
lock:
	test -x $(LATEST)/bin/python || { echo "run make test-latest first: the lock is what it installed"; exit 2; }
	{ echo "# The versions the tests passed with; make install installs exactly these. Written by make lock."; \
	  echo "# torch is outside: the Makefile's TORCH_INSTALL installs the CPU build first."; \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -i -E '^(torch|triton|nvidia-[a-z0-9_.-]*)=='; } > requirements.lock

clean-demo:
	rm -rf dagster_home/warehouse.db* dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs dagster_home/.telemetry dagster_home/.nux
