# minihttp: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-deps fuzz clean

# The servers need the standard library only: no virtual environment.  Options
# go in ARGS, e.g.
# make run ARGS='--port 8080 --block-port 1061' (all of them: make run ARGS=--help).
run:
	$(PYTHON) -m minihttp serve $(ARGS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# The peers make bench compares minihttp with: nginx, wrk and curl from Debian (as
# root), uvicorn, httptools and matplotlib into the virtual environment.  make bench
# runs without them, saying what it skipped.
bench-deps: $(STAMP)
	apt-get update
	apt-get install -y nginx wrk curl openssl
	$(VENV)/bin/python -m pip install --quiet -e '.[bench]'

# Coverage-guided fuzzing (atheris) of every parser, FUZZ_SECONDS each; crashing inputs
# land in fuzz/crashes/, which make test replays.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[fuzz]'
	$(VENV)/bin/python -m fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
