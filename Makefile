# xcore runner. `make run` and `make test` work on a fresh Linux box with Go and a Docker
# Engine (.ci/run installs the engine when it is missing).
GO       ?= go
EXAMPLES := hello slow crashy hog hang notes selfcheck
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# testcontainers-go on this kind of host: no reaper image can be pulled, and without the
# override it guesses a non-loopback address.
export TESTCONTAINERS_RYUK_DISABLED := true
export TESTCONTAINERS_HOST_OVERRIDE := 127.0.0.1

.PHONY: all build image images run test test-short test-swarm lint clean help bench bench-smoke

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/runner
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/runner ./cmd/runner

# Example plugin images: a static binary FROM scratch (no base image, no registry).
images: ## build the example plugin images (xcore-examples/<name>:latest)
	@for e in $(EXAMPLES); do \
	  echo "image xcore-examples/$$e:latest"; \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o examples/$$e/bin/$$e ./examples/$$e || exit 1; \
	  docker build -q --label io.xcore.example=$$e -t xcore-examples/$$e:latest examples/$$e >/dev/null || exit 1; \
	done

# The runner as an image (FROM scratch); see build/runner-image/Dockerfile for how to run it.
image: ## build the xcore-runner:latest image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o build/runner-image/runner ./cmd/runner
	docker build -q --label io.xcore.image=runner -t xcore-runner:latest build/runner-image >/dev/null
	@echo "image xcore-runner:latest"

run: build images ## build everything and run the root plugins.hcl in the foreground
	./bin/runner up -c plugins.hcl

lint: ## gofmt + go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint image fuzz bench-smoke ## fuzz targets and the bench's smoke run (bounded), then unit + Docker integration tests with the race detector, then the swarm test
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) test-swarm

# The swarm backend on a real two-node Docker Swarm built on this machine (the host
# engine the manager, a second dockerd in a network namespace the worker; a single-node
# swarm where namespaces cannot be made). It makes the host engine a swarm manager for a
# few minutes, so `make test` runs it alone, after every other test; it runs only on an
# engine that is in no swarm and leaves it as it was (see integration/swarm).
test-swarm: ## the swarm backend on a two-node swarm on this machine (root: the worker's namespace)
	XCORE_SWARM_TEST=1 $(GO) test -race -count=1 -timeout 20m -v -run '^TestSwarm$$' ./integration/swarm/

# Each fuzz target for FUZZTIME (seed corpora: <pkg>/testdata/fuzz/<Fuzz>/). A longer run:
# make fuzz FUZZTIME=5m
# The default is a count, not a duration: with a duration, Go's fuzz coordinator (go1.26)
# can report its own deadline as "context deadline exceeded", a failure with no failing
# input, when the workers are starved at the boundary (golang/go#75804, fixed in go1.27).
# A count has no deadline to race. 20000 inputs take 3-10 s per target on 2 cores.
FUZZTIME ?= 20000x
FUZZ_TARGETS := config:FuzzLoad proxy:FuzzPluginPath snapshot:FuzzDecode snapshot:FuzzHashStable

fuzz: ## run every fuzz target for FUZZTIME (default 20000 inputs each)
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t#*:}; \
	  echo "fuzz $$fn ./$$pkg/ ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/ || exit 1; \
	done

test-short: ## unit tests only (no Docker)
	$(GO) test -race -short -count=1 ./...

bench: build images ## runner vs direct/nginx/raw Docker, side by side (bench/RESULTS.md; < 10 min)
	@if ! command -v wrk >/dev/null || ! PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "bench: installing wrk and nginx-light (Debian)"; \
	    apt-get update -qq && RUNLEVEL=1 apt-get install -y -qq wrk nginx-light >/dev/null || \
	      echo "bench: install failed: Go load generator instead of wrk, nginx rows not measured"; \
	  else echo "bench: wrk/nginx missing (apt-get install wrk nginx-light): Go load generator, no nginx rows"; fi; \
	fi
	$(GO) run ./bench -out bench/RESULTS.md

# Every bench section at tiny scale (< 1 min on 2 cores), so that `make bench` cannot rot:
# fails when a section fails or a request fails during a start-first replacement. Needs
# neither wrk nor nginx (Go load generator; nginx rows say "skipped"); prints its table,
# never writes bench/RESULTS.md, removes everything it started.
bench-smoke: build images ## the bench's smoke run (part of make test)
	$(GO) run ./bench -smoke

clean: ## remove build output
	rm -rf bin examples/*/bin
