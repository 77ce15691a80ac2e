# Hermes: `make demo` runs the main job on one machine, `make test` runs the
# tests. Both install what they need first (`make deps`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

HERMES_CACHE ?= $(HOME)/.cache/hermes
export HERMES_CACHE
export PATH := $(HERMES_CACHE)/bin:$(PATH)
# cgo is needed by the builder and the snapshotter (soci's zTOC code uses zlib).
export CGO_ENABLED := 1

MODULES := . api tests tools
BIN := $(CURDIR)/bin
CMDS := ./registry/cmd/... ./controller/cmd/... ./snapshotter/cmd/...
GO_TEST_FLAGS ?= -count=1 -timeout 45m
HERMES_BENCH_OUT ?= $(CURDIR)/.bench
export HERMES_BENCH_OUT

.PHONY: help deps build test unit lint bench demo demo-down clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install pinned components (Debian packages, containerd, registries, CLIs, kube-apiserver, etcd) into $(HERMES_CACHE)
	@tools/install/install.sh

build: ## build Hermes' binaries into bin/
	@mkdir -p $(BIN)
	@pkgs=$$(go list $(CMDS) 2>/dev/null); \
	if [ -n "$$pkgs" ]; then go build -o $(BIN)/ $$pkgs && ls $(BIN); fi

lint: ## gofmt, go vet and a GOWORK=off build of every module
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do echo "vet+build $$m"; (cd $$m && go vet ./... && GOWORK=off go build ./...) || exit 1; done
	@echo "registry builds without cgo"; CGO_ENABLED=0 GOWORK=off go build ./registry/...

test: deps lint ## run every test: unit and real-component integration (CI=true makes missing components fail)
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && go test $(GO_TEST_FLAGS) ./...) || exit 1; done

unit: ## only the fast tests of the root module (no installs)
	go test -short ./...

bench: deps ## benchmarks: results as JSON and a table in .bench/
	@mkdir -p $(HERMES_BENCH_OUT)
	cd tools && go test -run '^$$' -bench . -benchtime 1x -timeout 120m ./bench/...
	@cat $(HERMES_BENCH_OUT)/*.txt 2>/dev/null || true

demo: deps ## the slice on one machine: origin behind a shaped link, hermes-registry, containerd + hermes-snapshotter, overlayfs vs lazy (root; DEMO_BANDWIDTH, DEMO_LAYERS, DEMO_NO_WAIT=1)
	@tools/demo/demo.sh up

demo-down: ## stop everything `make demo` started (processes, mounts, tc rules)
	@tools/demo/demo.sh down

clean: ## remove build outputs (not the component cache)
	rm -rf $(BIN) $(HERMES_BENCH_OUT)
