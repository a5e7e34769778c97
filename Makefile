# The front door: `make run` and `make test`. Each creates .venv from the requirements when missing
# (or when the requirements changed since the last install).
VENV    := .venv
PY      := $(VENV)/bin/python
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
READ_ONLY ?= $(LENSBOARD_READ_ONLY)
# RAY=HOST:PORT (or auto): the worker runs the queue on that Ray cluster (README: On a cluster)
ifdef RAY
export LENSBOARD_RAY := $(RAY)
endif

.PHONY: run worker lint test bench clean-venv

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime-installed

run: $(VENV)/.runtime-installed
	@# The worker starts now, so it is ready when the browser opens; the dashboard restarts it if it dies.
	@# READ_ONLY=1 shares results: no worker, and every control that writes is hidden and refused.
	$(if $(READ_ONLY),,$(PY) -c "from engine.runs.supervisor import ensure_worker_for; from engine.settings import Settings; \
		ensure_worker_for(Settings.from_env())")
	LENSBOARD_READ_ONLY=$(READ_ONLY) $(PY) -m streamlit run streamlit_app.py --server.address $(ADDRESS) \
		--server.port $(PORT) --server.headless true --browser.gatherUsageStats false

worker: $(VENV)/.runtime-installed
	$(PY) -m engine worker $(if $(RAY),--ray $(RAY),--slots auto)

# Style, types and layers, all configured in pyproject.toml: ruff's lint rules (pyflakes, pycodestyle, import
# order, bugbear, pyupgrade, type hints), ruff's formatter, mypy on the engine, and the import-linter contracts.
# `$(PY) -m ruff format .` fixes what the format check finds.
lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# The whole suite on every core (pytest-xdist); lint first, so a broken layer fails the build.
test: lint
	$(PY) -m pytest -n auto

bench: $(VENV)/.dev-installed
	@for b in train_throughput wait_policy precision_parity sweep_slots memory embed_throughput dashboard_render retrieval projection search ray_sweep; do b=benchmarks/$$b.py; echo "== $$b"; $(PY) $$b || exit 1; done
	bash benchmarks/gpu.sh

clean-venv:
	rm -rf $(VENV)
