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

.PHONY: help deps build images generate test unit lint bench demo demo-down clean

# controller-gen runs as a Go tool of tools/go.mod, at the version
# tools/install/versions.env pins (CONTROLLER_GEN_VERSION); the two must agree.
# It writes deepcopy code next to the API types and the CRD to $(CRD_DIR).
API_PKG := api/v1alpha1
CRD_DIR := manifests/crd
CONTROLLER_GEN := cd tools && GOWORK=off go tool controller-gen
define controller_gen_pinned
@want=$$(sed -n 's/^CONTROLLER_GEN_VERSION=//p' tools/install/versions.env); \
	have=$$(cd tools && GOWORK=off go list -m -f '{{.Version}}' sigs.k8s.io/controller-tools); \
	if [ "$$want" != "$$have" ]; then \
	  echo "controller-gen: tools/go.mod requires $$have but tools/install/versions.env pins $$want; make them agree" >&2; exit 1; fi
endef

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install pinned components (Debian packages, containerd, registries, CLIs, kube-apiserver, etcd) into $(HERMES_CACHE)
	@tools/install/install.sh

build: ## build Hermes' binaries into bin/
	@mkdir -p $(BIN)
	@pkgs=$$(go list $(CMDS) 2>/dev/null); \
	if [ -n "$$pkgs" ]; then go build -o $(BIN)/ $$pkgs && ls $(BIN); fi

images: ## build the controller, registry and snapshotter images from static Go binaries (no Docker) and push them to HERMES_IMAGE_REGISTRY (HERMES_IMAGE_TAG, HERMES_IMAGE_PLATFORMS, HERMES_IMAGES)
	@if [ -z "$$HERMES_IMAGE_REGISTRY" ]; then echo "make images: set HERMES_IMAGE_REGISTRY, e.g. HERMES_IMAGE_REGISTRY=registry.example.com/hermes make images" >&2; exit 2; fi
	@cd tools && go run ./images/cmd/images --root ..

generate: ## regenerate the API's deepcopy code and CRD with controller-gen
	$(controller_gen_pinned)
	@$(CONTROLLER_GEN) object paths=../api/... crd output:crd:artifacts:config=../$(CRD_DIR)
	@echo "generated $(API_PKG)/zz_generated.deepcopy.go and $(CRD_DIR)/"

lint: ## gofmt, go vet, a GOWORK=off build of every module, generated code up to date
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(controller_gen_pinned)
	@echo "generated code matches the API"; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	($(CONTROLLER_GEN) object paths=../api/... output:object:dir=$$tmp/object crd output:crd:dir=$$tmp/crd) || exit 1; \
	diff -u $(API_PKG)/zz_generated.deepcopy.go $$tmp/object/zz_generated.deepcopy.go && \
	diff -ru -x kustomization.yaml $(CRD_DIR) $$tmp/crd || { echo "generated files are stale: run make generate" >&2; exit 1; }
	@for m in $(MODULES); do echo "vet+build $$m"; (cd $$m && go vet ./... && GOWORK=off go build ./...) || exit 1; done
	@echo "registry builds without cgo"; CGO_ENABLED=0 GOWORK=off go build ./registry/...

test: deps lint ## run every test: unit and real-component integration (CI=true makes missing components fail)
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && go test $(GO_TEST_FLAGS) ./...) || exit 1; done

unit: ## only the fast tests of the root module (no installs)
	go test -short ./...

bench: deps ## benchmarks: results as JSON and a table in .bench/
	@mkdir -p $(HERMES_BENCH_OUT)
	cd tools && go test -run '^$$' -bench . -benchtime 1x -timeout 360m ./bench/...
	@cat $(HERMES_BENCH_OUT)/*.txt 2>/dev/null || true

demo: deps ## the whole chain on one machine: a single-node cluster with Hermes, a ≥1 GB image behind a shaped link, overlayfs vs lazy (root; DEMO_BANDWIDTH, DEMO_LAYERS, DEMO_NO_WAIT=1)
	@mkdir -p $(BIN)
	@cd tools && go test -tags demo -c -o $(BIN)/hermes-demo.test ./demo
	@# The driver runs as its own process so Ctrl-C reaches it and it cleans up.
	@$(BIN)/hermes-demo.test -test.run TestDemo -test.timeout 0

demo-down: ## remove what a demo killed hard left behind (processes, mounts, cgroups, tc rules)
	@tools/demo/down.sh

clean: ## remove build outputs (not the component cache)
	rm -rf $(BIN) $(HERMES_BENCH_OUT)
