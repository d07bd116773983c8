# `make test` runs what CI runs; `make bench` runs the pipeline benchmark
# (not part of CI). Extra benchmark options: make bench ARGS="--n 5000 --workers separate"
PYTHON := $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ARGS ?=

.PHONY: test bench

test:
	scripts/test

bench:
	$(PYTHON) -m bench.pipeline $(ARGS)
