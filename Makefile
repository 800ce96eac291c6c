# Every target installs what it needs: a fresh machine needs nothing but `make test` or `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := reconciler tests demo $(wildcard bench) $(wildcard harness)

.PHONY: install constraints haproxy haproxy-matrix tini lint test demo bench chaos clean

# The dev and test tools (and all they pull in) at the versions in constraints.txt, so that a new
# release of ruff, mypy, moto or hypothesis cannot turn `make lint` or `make test` red on its own;
# pyproject.toml keeps ranges for users.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP) haproxy haproxy-matrix tini

# Refresh the pins: the newest versions pyproject.toml allows, resolved in a throwaway venv. Then
# `make test` (which reinstalls from the new pins) before committing constraints.txt.
constraints:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && \
	"$$tmp/bin/pip" install --quiet --upgrade pip && \
	"$$tmp/bin/pip" install --quiet -e '.[test]' && \
	{ echo "# Dev and test toolchain pins, used by make (pip install -c). Refresh: make constraints"; \
	  "$$tmp/bin/pip" freeze --exclude-editable; } > constraints.txt.new && \
	mv constraints.txt.new constraints.txt

# HAProxy 2.6 from Debian's packages when the machine has none.
haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
	  echo "haproxy not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
	@haproxy -v | head -n 1

# The other HAProxy versions the HAProxy-facing tests and `make bench` run on (3.0, Debian 13's),
# built from Debian's source packages into .cache/haproxy: about a minute the first time, then
# reused without the network. The script prints the binaries' paths; this target their versions.
# The list is captured first so that a failed build fails here (a `for` over a failed command's
# output would just loop zero times).
haproxy-matrix:
	@matrix=$$(bash .ci/haproxy-matrix) && for binary in $$matrix; do "$$binary" -v | head -n 1; done

# Debian's tini: the container image's PID 1, run by the tests as the image's ENTRYPOINT.
tini:
	@test -x /usr/bin/tini || { \
	  echo "tini not found: installing it from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tini >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/cfn-lint deploy/aws/*.yaml

# Tests marked haproxy_versions run once per HAProxy of the matrix; the rest on the system's.
test: install lint
	matrix=$$(bash .ci/haproxy-matrix) && HAPROXY_MATRIX="$$matrix" $(BIN)/pytest -q -p no:cacheprovider

# The whole system on one machine, AWS played by moto on loopback; exit 0 when every step
# converged. DEMO_INTERACTIVE=1 pauses before each step; DEMO_STAY=1 keeps the world up after the
# last step, until Ctrl-C, to run the CLI against it with the lines the demo prints.
demo: install
	$(BIN)/python -m demo

# The benchmarks at full size (about 13 minutes): tables, and JSON in bench/results/. The
# convergence benchmark runs once per HAProxy of the matrix, its figures side by side.
bench: install
	matrix=$$(bash .ci/haproxy-matrix) && HAPROXY_MATRIX="$$matrix" $(BIN)/python -m bench

# The chaos suite: 200 scale events with every fault at once, about 5 minutes; prints its seed
# (replay: python -m bench.chaos --seed N). `make test` runs the 20-event version.
chaos: install
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
