# Quick start: `make demo` (set up + main job on digits), `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test lint bench screenshots clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel the machine provides (a range would fetch a CUDA build)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/taskspace demo

# headless Chromium for the report's browser tests: installed when missing and this runs as
# root with apt; otherwise those tests skip with the reason
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    echo "installing chromium and chromium-driver for the browser tests" && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "no browser (chromium, chromium-driver): the report's browser tests will skip"

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_discovery.py
	$(PY) benchmarks/bench_gpu.py
	$(PY) benchmarks/bench_robust_grid.py
	$(PY) benchmarks/bench_spurious.py
	$(PY) benchmarks/bench_embed.py
	$(PY) benchmarks/bench_affinity.py
	$(PY) benchmarks/bench_selection.py

# the README's report screenshots, taken by the browser tests
screenshots: $(STAMP) browser
	TASKSPACE_SCREENSHOTS=docs/images $(PY) -m pytest tests/test_report_browser.py

clean:
	rm -rf $(VENV) runs .pytest_cache
