# The two front-door commands (README): `make demo` and `make test`.
# Both build the environments they need first; rebuilding is skipped when
# nothing changed (scripts/setup keeps a stamp of its inputs).

VENV ?= .venv
export LLMREC_DATA_MIRROR ?= $(abspath ../shared/data)
export DGLBACKEND = pytorch
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: setup setup-vllm venvs vllm-venv demo test bench

setup:
	scripts/setup

# Ray Data goes into the vLLM venv by a script of its own (see scripts/setup-ray).
setup-vllm: venvs
	scripts/setup-vllm

# Both venvs, built side by side (fresh 2-core machine: 9.1 min one after the other - .venv 4.0, .venv-vllm
# with Ray 4.1, GGUF conversion 1.0 - and 5.9 min this way; neither build alone kept both cores busy).
venvs:
	$(MAKE) --no-print-directory -j2 setup vllm-venv

vllm-venv:
	scripts/setup-vllm --venv-only
	scripts/setup-ray

demo: setup
	$(VENV)/bin/llmrec run --run runs/demo --config configs/demo.toml

# Two pytest-xdist workers: the suite is mostly one process waiting on another (CLI runs, the vLLM
# server), ~1.1 cores busy on average run alone; tests/conftest.py groups the tests into work units.
# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
TEST_WORKERS ?= 2
test: setup-vllm
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: setup-vllm
	$(VENV)/bin/python -m bench
