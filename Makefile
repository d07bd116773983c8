# `make test` runs what CI runs; `make bench` runs the pipeline benchmark and
# `make bench-lanes` the lanes benchmark (neither is part of CI; `make bench`
# installs Debian's postfix first when missing: scripts/bench-deps). Extra options:
# make bench ARGS="--n 5000 --workers separate"; make bench-lanes ARGS="--campaign 20000"
PYTHON := $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ARGS ?=

.PHONY: test bench bench-lanes

test:
	scripts/test

bench:
	scripts/bench-deps  # Debian's postfix, the anchor measured in the same run
	$(PYTHON) -m bench.pipeline $(ARGS)

bench-lanes:
	$(PYTHON) -m bench.lanes $(ARGS)
