# The two commands: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv system-deps test lint demo bench protos check-protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "extauthz needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || \
		{ scripts/system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

# Debian packages the suite uses, installed through apt only when missing.
system-deps:
	@scripts/system-deps.sh redis-server chromium nghttp2-client wrk

lint: venv
	$(BIN)/python protos/generate.py --check
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv system-deps lint
	$(BIN)/pytest

demo: venv
	$(BIN)/python -m extauthz.demo.run

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
