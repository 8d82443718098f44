# One entry point for people and CI. `make demo` and `make test` set everything up on a
# fresh machine (Python 3.11 + pip + the Rust toolchain); nothing else needs installing.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.deps-installed

.DEFAULT_GOAL := help
.PHONY: help install dev lint test test-rust test-py bench bench-rust demo clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# Every dependency of the package, of all its extras and of development (the extras that
# name the package itself are expanded by listing every extra).
$(STAMP): pyproject.toml
	@echo "== installing the Python dependencies into $(VENV)"
	@python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  deps = p['dependencies'] + [d for ds in p['optional-dependencies'].values() for d in ds]; \
	  print('\n'.join(sorted({d for d in deps if not d.startswith(p['name'])})))" > $(VENV)/requirements.txt
	@$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements.txt
	@touch $@

install: $(STAMP)  ## Create .venv with the runtime and development dependencies

dev: install  ## Build the Rust extension (release) into .venv
	@echo "== building the Rust extension (release; the first build takes a minute or two)"
	@VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release > $(VENV)/maturin.log \
	  || (cat $(VENV)/maturin.log; exit 1)

lint: dev  ## cargo fmt + clippy, ruff, mypy --strict, stubtest
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest billing_gateway._core

test-rust:  ## Rust unit, thread and loom tests of the core
	cargo test --lib

test-py: dev  ## The pytest suite
	$(PY) -m pytest

test: lint test-rust test-py  ## Everything CI runs

# The benchmarks' baselines (`_core.NoOp`) are built into the extension only here; `make dev`
# (which always runs maturin) builds the public extension, without them, again.
bench: install  ## Benchmarks (pytest-benchmark, then criterion); prints ratios to baselines
	@echo "== building the Rust extension with the benchmark baselines"
	@VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --features python,bench-baselines \
	  > $(VENV)/maturin.log || (cat $(VENV)/maturin.log; exit 1)
	$(PY) -m pytest benches --benchmark-enable --benchmark-only -p no:randomly -q --timeout 1800
	cargo bench --bench core

demo: dev  ## The whole system (broker, billing, LLM proxy, two fake upstreams) driven by the openai client
	$(PY) examples/demo.py

clean:  ## Remove the virtualenv and build outputs
	rm -rf $(VENV) target
