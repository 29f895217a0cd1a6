# envlet — see README.md.
GO      ?= go
BIN     ?= bin
# The launcher is built static and stripped: it is copied into images.
LAUNCHER_FLAGS = CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w'

.PHONY: screenshots all build man demo test test-etcd test-python test-short bench bench-etcd bench-etcd-org bench-etcd-fleet bench-flood lint fuzz clean deb container-context

all: build

build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/envletd ./cmd/envlet
	$(LAUNCHER_FLAGS) -o $(BIN)/envlet-exec ./cmd/envlet-exec

# Man pages into $(MAN): envlet's, one per command, generated from its
# command tree (cmd/envlet/man.go); envletd(8) and envlet-exec(1) from
# their roff sources in docs/man/.
MAN ?= $(BIN)/man
man:
	rm -rf $(MAN) && mkdir -p $(MAN)
	$(GO) run -tags mangen ./cmd/envlet __man-pages $(MAN)
	cp docs/man/envletd.8 docs/man/envlet-exec.1 $(MAN)/

demo: build
	./scripts/demo.sh

# Everything: formatting, vet, and every test with the race detector; then
# the end-to-end suite again with every agent on etcd. The etcd tests find
# Debian's etcd or, as root, install it (apt-get install etcd-server
# etcd-client); without it they skip, unless ENVLET_REQUIRE_ETCD=1 (CI).
test: lint
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory test-etcd
	$(MAKE) --no-print-directory test-python

# The end-to-end suite on the etcd backend (one etcd, a prefix per agent);
# the TestEtcd* tests ran in the first pass already.
test-etcd:
	ENVLET_E2E_BACKEND=etcd $(GO) test -race -count=1 -timeout 30m -skip '^TestEtcd' ./e2e/

# The Python client (clients/python/): mypy --strict, then its pytest suite
# (as root) against real `envletd -dev` agents built here. Without pytest or
# mypy it skips, unless CI=true; pytest's exit 5 (no tests ran) fails it
# like any other non-zero status.
PYTHON ?= /usr/bin/python3
test-python: build
	@if ! $(PYTHON) -c 'import pytest' 2>/dev/null || ! command -v mypy >/dev/null; then \
	  if [ "$$CI" = true ]; then echo "test-python: python3-pytest and mypy are needed" >&2; exit 1; fi; \
	  echo "test-python: SKIP: install python3-pytest mypy python3-pip python3-setuptools"; exit 0; fi; \
	cd clients/python && mypy --strict --python-version 3.9 --no-incremental src/envlet && \
	  ENVLET_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider tests

# A PNG of every page of the web console (envlet ui), taken by its browser
# tests' headless Chromium (as root), into docs/screenshots/.
screenshots:
	mkdir -p docs/screenshots
	ENVLET_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestConsole(Audit)?$$' ./e2e/


# Without the slow tests (builds of the binaries, long runs): -short.
test-short:
	$(GO) test -short -count=1 ./...

# gofmt, vet and staticcheck (a tool of the module: go.mod's tool
# directive pins its version, so no network beyond the module proxy).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Every benchmark, as root, into BENCHMARKS.md (under 10 minutes on 2 cores;
# the first run also installs the peers it compares with). One section:
# make bench BENCHFLAGS='-only load' (writes BENCHMARKS.tmp).
bench: build
	./scripts/bench.sh $(BENCHFLAGS)

# Propagation between two agents on one etcd (p50/p99 over 1,000 writes)
# and reads served per second while etcd is down.
bench-etcd: build
	$(GO) test -run '^$$' -bench EtcdPropagation -benchtime 1x -v ./e2e/

# GetEnv requests/s served to well-behaved workloads while 256 misbehaving
# connections are held open (as root; bench/flood).
# A whole organization (~700,000 records) in a real etcd, one agent on it
# (issue 18 goal 5; as root; several minutes): BENCHMARKS.tmp.
# Smaller: make bench-etcd-org BENCHFLAGS='-org-scale 0.1'.
bench-etcd-org: build
	./scripts/bench.sh -only etcdorg $(BENCHFLAGS)

# 16 agents × 1,000 workloads on a 3-member etcd cluster (issue 18 goal 6;
# as root): BENCHMARKS.tmp. Smaller: BENCHFLAGS='-fleet-agents 4 -fleet-workloads 200'.
bench-etcd-fleet: build
	./scripts/bench.sh -only etcdfleet $(BENCHFLAGS)

bench-flood: build
	$(GO) build -o $(BIN)/bench/flood ./bench/flood
	$(BIN)/bench/flood -bin $(BIN)

# A short run of every fuzz target; FUZZTIME=10m for a longer one.
FUZZTIME ?= 30s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# Packaging (packaging/): the .deb, and the build context of the example
# container image, in $(DIST).
VERSION ?= 0.1.0
DIST    ?= dist

deb: man
	MAN=$(abspath $(MAN)) VERSION=$(VERSION) GO=$(GO) ./packaging/deb/build.sh $(DIST)

container-context:
	mkdir -p $(DIST)/container
	$(LAUNCHER_FLAGS) -o $(DIST)/container/envlet-exec ./cmd/envlet-exec
	cp packaging/container/Dockerfile $(DIST)/container/

clean:
	rm -rf $(BIN) $(DIST)
