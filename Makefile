# Everyday commands. `make demo` and `make test` work on a fresh machine with only
# Python, make and the package registries: they create .venv and install from the lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := constraints.txt

DEMO_DIR   ?= data/synthetic/demo
DEMO_OUT   ?= data/demo-output
SPARSE_DIR ?= data/synthetic/sparse
DEMO_LEADS ?= 50000
SEED       ?= 7

.PHONY: demo retrain test install install-test lock bench clean help report-shots

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test,bench,spark]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed  ## create .venv and install leadscore from the lock

install-test: $(VENV)/.installed-test  ## install leadscore with what the tests need

demo: install  ## generate synthetic data and run every stage that exists, end to end
	$(BIN)/leadscore synth --leads $(DEMO_LEADS) --seed $(SEED) --out $(DEMO_DIR)
	$(BIN)/leadscore validate --data $(DEMO_DIR)
	$(BIN)/leadscore funnel --data $(DEMO_DIR)
	$(BIN)/leadscore features --data $(DEMO_DIR) --as-of 2025-10-01 --out $(DEMO_OUT)/features.parquet
	$(BIN)/leadscore baseline --data $(DEMO_DIR) --as-of 2025-06-01 \
		--out $(DEMO_OUT)/baseline.parquet
	$(BIN)/leadscore train --config pipelines/train.yaml --data $(DEMO_DIR)
	$(BIN)/leadscore score --model models:/leadscore@champion --data $(DEMO_DIR) --as-of 2025-09-24 \
		--out $(DEMO_OUT)/scores/2025-09-24.parquet --history $(DEMO_OUT)/history
	$(BIN)/leadscore score --model models:/leadscore@champion --data $(DEMO_DIR) --as-of 2025-10-01 \
		--out $(DEMO_OUT)/scores/2025-10-01.parquet --previous $(DEMO_OUT)/scores/2025-09-24.parquet \
		--history $(DEMO_OUT)/history
	for d in 2025-07-01 2025-08-01; do $(BIN)/leadscore score --model models:/leadscore@champion --data $(DEMO_DIR) \
		--as-of $$d --out $(DEMO_OUT)/scores/$$d.parquet --no-progress > /dev/null || exit 1; done
	$(BIN)/leadscore monitor --model models:/leadscore@champion --data $(DEMO_DIR) --scores $(DEMO_OUT)/scores \
		--out $(DEMO_OUT)/monitor.html --json $(DEMO_OUT)/monitor.json || [ $$? -ge 4 ]  # 4 retrain, 5 review cutoffs: a verdict, not a failure
	# a real-shaped export (no SQL stage, its own names and formats), read through a source mapping
	$(BIN)/leadscore synth --profile sparse --seed 0 --out $(SPARSE_DIR) --no-progress
	$(BIN)/leadscore validate --source pipelines/sources/sparse.yaml --data $(SPARSE_DIR)
	$(BIN)/leadscore train --config pipelines/sparse.yaml --data $(SPARSE_DIR)
	$(BIN)/leadscore score --model models:/leadscore-sparse@champion --source pipelines/sources/sparse.yaml \
		--data $(SPARSE_DIR) --as-of 2025-10-01 --out $(DEMO_OUT)/sparse/scores/2025-10-01.parquet --no-progress
	@echo
	@echo "Results:"
	@echo "  synthetic CRM tables   $(DEMO_DIR)/{leads,activities,lifecycle}.parquet"
	@echo "  ground truth (oracle)  $(DEMO_DIR)/truth.parquet, $(DEMO_DIR)/latent_*.parquet"
	@echo "  generator manifest     $(DEMO_DIR)/manifest.json"
	@echo "  features (as of end)   $(DEMO_OUT)/features.parquet (+ features.catalogue.csv)"
	@echo "  rule baseline          $(DEMO_OUT)/baseline.parquet"
	@echo "  trained model bundle   models/leadscore/ (manifest.json, report.html)"
	@echo "  MLflow runs + registry mlflow.db, mlartifacts/ (mlflow ui --backend-store-uri sqlite:///mlflow.db)"
	@echo "  nightly scores         $(DEMO_OUT)/scores/2025-10-01.parquet (and 2025-09-24.parquet)"
	@echo "  stage transitions      $(DEMO_OUT)/scores/2025-10-01.transitions.parquet"
	@echo "  score history          $(DEMO_OUT)/history/ (one compact file per run)"
	@echo "  monitoring report      $(DEMO_OUT)/monitor.html (+ monitor.json)"
	@echo "  explain one lead       $(BIN)/leadscore explain --model models:/leadscore@champion --data $(DEMO_DIR) --as-of 2025-10-01 --lead-id ID --history $(DEMO_OUT)/history"
	@echo "  sparse CRM export      $(SPARSE_DIR)/ (mapped by pipelines/sources/sparse.yaml), model models/leadscore-sparse/,"
	@echo "                         scores $(DEMO_OUT)/sparse/scores/2025-10-01.parquet"

# the HTML reports `make demo` writes: the training reports of both bundles and the monitoring report
REPORTS   ?= models/leadscore/report.html models/leadscore-sparse/report.html $(DEMO_OUT)/monitor.html
SHOTS_DIR ?= $(DEMO_OUT)/shots

report-shots: install  ## full-page PNG screenshots of the demo's HTML reports into data/demo-output/shots/ (needs chromium, after `make demo`)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ echo "report-shots: chromium is not installed (Debian/Ubuntu: apt-get install chromium)" >&2; exit 1; }
	@for f in $(REPORTS); do [ -f "$$f" ] || \
		{ echo "report-shots: $$f is missing; run 'make demo' first" >&2; exit 1; }; done
	$(BIN)/python -m leadscore.devtools.report_shots $(REPORTS) --out $(SHOTS_DIR)

CONFIG ?= pipelines/train.yaml
DATA   ?= $(DEMO_DIR)

retrain: install  ## retrain on the newest matured outcomes (CONFIG=..., DATA=...); promote only a better challenger
	$(BIN)/leadscore retrain --config $(CONFIG) --data $(DATA)

test: install-test  ## run the whole test suite
	$(BIN)/python -m pytest

BENCH_DIR ?= data/synthetic/bench

bench: install-test  ## run the benchmarks on 1M synthetic leads (big data; minutes)
	$(BIN)/python benchmarks/bench_synth.py --out $(BENCH_DIR)
	$(BIN)/python benchmarks/bench_features.py --data $(BENCH_DIR)
	$(BIN)/python benchmarks/bench_score.py --data $(BENCH_DIR)
	$(BIN)/python benchmarks/bench_explain.py --data $(BENCH_DIR)
	$(BIN)/python benchmarks/bench_spark.py --data $(BENCH_DIR)

lock:  ## re-resolve the lock file from pyproject.toml lower bounds (newest allowed versions)
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[test,bench,spark]'
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^leadscore' > $(LOCK)
	rm -rf .venv-lock

clean:  ## remove the virtual environment and generated data
	rm -rf $(VENV) data/synthetic data/demo-output models/leadscore models/leadscore-challenger models/leadscore-sparse \
		mlflow.db mlartifacts
