# taskhub: `make run` starts everything, `make test` checks everything.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
GEN     := build/gen
PROTOS  := $(wildcard protos/taskhub/v1/*.proto)
STAMP   := $(VENV)/.installed

.PHONY: task-user install run test bench bench-peer chaos proto clean test-clients browser sdk wheel-check postgres

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(PROTOS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "grpcio-tools>=1.60,<2" "googleapis-common-protos>=1.60,<2"
	$(MAKE) proto
	$(BIN)/pip install -q -e '.[dev,fate]'
	$(MAKE) test-clients
	touch $(STAMP)

# The real FATE client (seed 004), for tests only: its declared pins are stale (FATE_FLOW.md),
# so it goes in without its dependencies, beside the ones it really needs.
# Likewise delta-task, Delta's SDK (seed 000): it pins torch 1.8.2+cpu, numpy 1.22 and more, none of
# which installs on Python 3.11; `import delta` needs torch, cloudpickle, pandas, numpy, pillow, httpx
# and networkx. torch==2.13.0 exactly: that release is a CPU build kept on this machine's disk (about
# 35 s, 750 MB); a range would let pip fetch a CUDA build of several GB.
test-clients:
	$(BIN)/pip install -q --no-deps "fate-client==1.11.3"
	$(BIN)/pip install -q "requests>=2.28,<3" "requests-toolbelt>=1,<2" "pandas>=2,<3" "loguru>=0.7,<1" "ruamel.yaml>=0.16,<0.17"
	$(BIN)/pip install -q --no-deps "delta-task==0.8.3"
	$(BIN)/pip install -q "torch==2.13.0" "cloudpickle>=2.2,<4" "httpx>=0.23,<1" "pillow>=9,<13" "networkx>=2.7,<4"


# Generated code lives in build/gen (never committed, never edited); the build backend (setup.py)
# runs the same generator, so `pip install .` works from a fresh clone.
proto:
	$(BIN)/python generate_stubs.py $(GEN)

# The package as users install it: the wheel built from this tree, installed in a clean venv (no
# source tree on its path), must serve: `taskhub serve` from it answers gRPC health. Run by CI.
WHEEL := build/wheel
wheel-check: install
	rm -rf $(WHEEL) && $(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(WHEEL) .
	$(PY) -m venv --without-pip $(WHEEL)/venv
	$(BIN)/pip --python $(WHEEL)/venv/bin/python install -q $(WHEEL)/taskhub-*.whl
	cd $(WHEEL) && venv/bin/python $(CURDIR)/tests/wheel_health.py venv/bin/taskhub

# The SDK alone (client/ + the stubs, no server): dist/taskhub_client-*.whl (packaging/sdk/).
sdk: install
	$(BIN)/python packaging/sdk/build.py dist

run: install
	mkdir -p var
	$(BIN)/taskhub serve --db var/taskhub.db

test: install browser task-user postgres
	$(BIN)/python -m pytest -q tests

# Under --auth the local node runs tasks as `nobody` (--task-user): that user must be able to reach
# the venv's interpreter. As root, give every directory above it the traverse bit (o+x: enter, not
# list) where it lacks it, e.g. a 0700 /root holding pyenv. Not root: the server says why and
# keeps its local node off under --auth.
task-user:
	@if [ "$$(id -u)" = 0 ] && ! runuser -u nobody -- $(BIN)/python -c pass 2>/dev/null; then \
	  d=$$(dirname "$$(readlink -f $(BIN)/python)"); \
	  while [ "$$d" != / ]; do chmod o+x "$$d"; d=$$(dirname "$$d"); done; \
	  echo "task-user: made the interpreter's directories traversable for nobody"; fi

# Headless Chromium and its driver for the dashboard's browser tests (Debian packages; CI runs as root).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# PostgreSQL server binaries (Debian's postgresql package): the store's tests and bench start their own
# throwaway cluster with initdb and pg_ctl (bench/pgcluster.py); nothing is started here.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (apt-get)"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

bench: install postgres
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.backends
	$(BIN)/python -m bench.cluster
	$(BIN)/python -m bench.queue_scale
	$(BIN)/python -m bench.fate_flow
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.fate_suites
	$(BIN)/python -m bench.fate_sites

# taskhub beside Celery + Redis (installed into bench/.venv-peer and Debian's redis-server by the bench itself)
bench-peer: install
	$(BIN)/python -m bench.peer

# Real server and agents killed and frozen at random for 10 minutes, then the invariants are checked
# (bench/chaos.py; bench/results/chaos.json). A 30-second version runs in `make test`.
# CHAOS_HA=1: three servers on one PostgreSQL, the scheduler killed most often (bench/chaos_ha.py).
chaos: install $(if $(CHAOS_HA),postgres)
	$(BIN)/python -m bench.chaos --seconds $${CHAOS_SECONDS:-600} $(if $(CHAOS_HA),--ha)

clean:
	rm -rf $(VENV) $(GEN) build dist *.egg-info bench/.venv-peer
