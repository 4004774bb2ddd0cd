# xcore runner. `make run` and `make test` work on a fresh Linux box with Go and a Docker
# Engine (.ci/run installs the engine when it is missing).
GO       ?= go
EXAMPLES := hello slow crashy hog hang notes
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# testcontainers-go on this kind of host: no reaper image can be pulled, and without the
# override it guesses a non-loopback address.
export TESTCONTAINERS_RYUK_DISABLED := true
export TESTCONTAINERS_HOST_OVERRIDE := 127.0.0.1

.PHONY: all build image images run test test-short lint clean help bench

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

test: lint ## unit + Docker integration tests, with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## unit tests only (no Docker)
	$(GO) test -race -short -count=1 ./...

bench: build images ## replacement under load: runner start-first vs stop-first recreate (bench/RESULTS.md)
	$(GO) run ./bench -out bench/RESULTS.md

clean: ## remove build output
	rm -rf bin examples/*/bin
