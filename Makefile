# Every target installs what it needs into .venv; nothing else is assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install generate lint test demo containerd bench soak clean

# The real-daemon tests, soak and bench find containerd through CONTAINERD_BIN, then PATH:
# here, unless set already, the private bin dir that `make containerd` lays out.
CONTAINERD_BIN ?= $(abspath .cache/containerd/bin)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The bench extra too: its package is type-checked and smoke-tested with the rest.
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

# The betterproto2 plugin formats its output with ruff, so the venv's bin goes first on PATH.
generate: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) scripts/generate.py sandboxclient/_proto

containerd:
	bash scripts/fetch-containerd.sh
	bash scripts/fetch-registry.sh
	bash scripts/install-openssl.sh
	bash scripts/install-runsc.sh
	bash scripts/install-cni.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The stand-in tests run on every core (pytest-xdist); the real-daemon ones (marked real) one
# at a time against one containerd, in a run of their own.
TEST_WORKERS ?= auto
CGROUP2_TESTS = .cache/cgroup2-tests
TEST_ENV = CONTAINERD_BIN="$(CONTAINERD_BIN)" PATH="$(abspath $(VENV))/bin:$$PATH"

test: $(STAMP) containerd lint
	$(TEST_ENV) $(PY) -m pytest -m "not real" -n $(TEST_WORKERS) $(PYTEST_ARGS)
	$(TEST_ENV) $(PY) -m pytest -m real $(PYTEST_ARGS)
	# The wire and client tests again on the libraries' plain paths (no codec plans, no
	# hooked protocol), which a dependency of an untested version gets: behaviour must not
	# depend on the fast ones. What lies above the client does not see the difference.
	SANDBOXCLIENT_PLAIN_WIRE=1 $(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -m "not real" -n $(TEST_WORKERS) tests/wire tests/client tests/serve $(PYTEST_ARGS)
	SANDBOXCLIENT_PLAIN_WIRE=1 $(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -m real tests/wire tests/client tests/serve $(PYTEST_ARGS)
	# The tests marked cgroup2 again on a kernel whose only cgroup hierarchy is v2, as most
	# hosts now run: a VM (scripts/vm-run.sh) emulating every instruction, so their fixtures
	# wait ten times longer. These machines mount memory, pids and cpu as v1.
	# They are found here and named to the VM by node id, which then imports only their modules:
	# one a line in a file pytest reads its arguments from (@FILE), so that no id is split.
	mkdir -p $(dir $(CGROUP2_TESTS)) && $(PY) -m pytest -q -p no:cacheprovider --collect-only -m "real and cgroup2" tests | grep '::' >$(CGROUP2_TESTS)
	SANDBOXCLIENT_TEST_SLOWDOWN=10 CONTAINERD_BIN="$(CONTAINERD_BIN)" bash scripts/vm-run.sh $(PY) -m pytest -q -p no:cacheprovider -m "real and cgroup2" @$(CGROUP2_TESTS) $(PYTEST_ARGS)

soak: $(STAMP) containerd
	CONTAINERD_BIN="$(CONTAINERD_BIN)" SANDBOXCLIENT_SOAK=1000 $(PY) -m pytest tests/client/test_soak.py -q $(PYTEST_ARGS)

# Starts its own containerd; prints every figure as a ratio measured side by side (< 10 min).
BENCH_ARGS ?= --json .cache/bench.json --plot .cache/throughput.png
bench: $(STAMP) containerd
	CONTAINERD_BIN="$(CONTAINERD_BIN)" PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m bench $(BENCH_ARGS)

demo: $(STAMP)
	$(PY) examples/lifecycle.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
