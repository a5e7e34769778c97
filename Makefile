# The front door: `make run` and `make test`. Each creates .venv from the requirements when missing
# (or when the requirements changed since the last install).
VENV    := .venv
PY      := $(VENV)/bin/python
PORT    ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: run worker test bench clean-venv

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
	$(PY) -c "from engine.worker import ensure_worker; ensure_worker()"
	$(PY) -m streamlit run streamlit_app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

worker: $(VENV)/.runtime-installed
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) -m engine worker --slots auto

test: $(VENV)/.dev-installed
	$(PY) -m pytest

bench: $(VENV)/.dev-installed
	@for b in train_throughput precision_parity sweep_slots memory embed_throughput dashboard_render retrieval projection; do b=benchmarks/$$b.py; echo "== $$b"; $(PY) $$b || exit 1; done
	bash benchmarks/gpu.sh

clean-venv:
	rm -rf $(VENV)
