# taskhub: `make run` starts everything, `make test` checks everything.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
GEN     := build/gen
PROTOS  := $(wildcard protos/taskhub/v1/*.proto)
STAMP   := $(VENV)/.installed

.PHONY: install run test bench bench-peer chaos proto clean test-clients

install: $(STAMP)

$(STAMP): pyproject.toml $(PROTOS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "grpcio-tools>=1.60,<2" "googleapis-common-protos>=1.60,<2"
	$(MAKE) proto
	$(BIN)/pip install -q -e '.[dev,fate]'
	$(MAKE) test-clients
	touch $(STAMP)

# The real FATE client (seed 004), for tests only: its declared pins are stale (FATE_FLOW.md),
# so it goes in without its dependencies, beside the ones it really needs.
test-clients:
	$(BIN)/pip install -q --no-deps "fate-client==1.11.3"
	$(BIN)/pip install -q "requests>=2.28,<3" "requests-toolbelt>=1,<2" "pandas>=2,<3" "loguru>=0.7,<1" "ruamel.yaml>=0.16,<0.17"


# Generated code lives in build/gen (never committed, never edited).
proto:
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  -I$$($(BIN)/python -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))') \
	  --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	touch $(GEN)/taskhub/__init__.py $(GEN)/taskhub/v1/__init__.py

run: install
	mkdir -p var
	$(BIN)/taskhub serve --db var/taskhub.db

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python -m bench.run

# taskhub beside Celery + Redis (installed into bench/.venv-peer and Debian's redis-server by the bench itself)
bench-peer: install
	$(BIN)/python -m bench.peer

# Real server and agents killed and frozen at random for 10 minutes, then the invariants are checked
# (bench/chaos.py; bench/results/chaos.json). A 30-second version runs in `make test`.
chaos: install
	$(BIN)/python -m bench.chaos --seconds $${CHAOS_SECONDS:-600}

clean:
	rm -rf $(VENV) $(GEN) build *.egg-info bench/.venv-peer
