# caddy-spawn — entry points. `make run` and `make test` do all set-up.
#
# Tools are pinned and built from source with `go install` into .tools/bin
# (git-ignored, cached: a second run is quick). Debian packages the build
# needs (busybox-static for images, libseccomp-dev for runc) are installed
# with apt-get when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CONTAINERD_VERSION    := v2.4.2
RUNC_VERSION          := v1.5.2
GOLANGCI_LINT_VERSION := v2.15.0
# The containerd releases hosts run, each started as a separate daemon with
# its stock configuration by make integration-address (the pinned
# CONTAINERD_VERSION above is tested there too); and one the app refuses.
# v2.2.9 is left out: its crash sweep leaves containerd's bundle dirs of killed tasks
# (issue 12 note); 2.x is covered by the pinned CONTAINERD_VERSION.
CONTAINERD_HOST_VERSIONS    := v1.7.35
CONTAINERD_REFUSED_VERSION  := v1.6.36
HELM_VERSION          := v4.3.2

TOOLS   := $(CURDIR)/.tools
BIN     := $(TOOLS)/bin
BUILD   := $(CURDIR)/build
IMAGES  := $(BUILD)/images
CADDY   := $(BUILD)/caddy
GO      ?= go

export PATH := $(BIN):$(PATH)
export CGO_ENABLED ?= 0

CONTAINERD_STAMP    := $(TOOLS)/.containerd-$(CONTAINERD_VERSION)
RUNC_STAMP          := $(TOOLS)/.runc-$(RUNC_VERSION)
GOLANGCI_LINT_STAMP := $(TOOLS)/.golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM_STAMP          := $(TOOLS)/.helm-$(HELM_VERSION)
GO_SOURCES          := $(shell find . -name '*.go' -not -path './.tools/*' -not -path './build/*') go.mod go.sum

.PHONY: all run test unit integration integration-stock integration-address containerd-hosts test-fleet test-chart test-vm fuzz bench bench-fleet soak build images tools deps host lint golden clean

all: build

## run: set everything up, then start Caddy with examples/Caddyfile on localhost:8080
run: tools host images build
	@echo "caddy-spawn: serving examples on http://localhost:8080 (/hello /echo /stream /env); Ctrl-C stops"
	exec $(CADDY) run --config examples/Caddyfile --adapter caddyfile

## test: set everything up, then lint, unit, fuzz (short), containerd integration and end-to-end tests
test: tools lint images build unit fuzz test-chart integration integration-stock integration-address test-fleet test-vm

unit:
	SPAWN_REQUIRE_QEMU=1 $(GO) test -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadCGIHead$$' -fuzztime 100000x ./caddymodule/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 500000x ./internal/initframe/

# Integration and end-to-end tests need root, the pinned containerd and runc,
# and the test images; each test binary starts its own private containerd.
integration: tools host images build
	@[ "$$(id -u)" = 0 ] || { echo "integration tests need root (containers)"; exit 1; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) \
		$(GO) test -count=1 -p 1 -timeout 30m -tags integration -v ./integration/... 2>&1 | tee $(BUILD)/integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; \
		! grep -qE -- '^\s*--- SKIP' $(BUILD)/integration.log || { echo "FAIL: real tests were skipped"; exit 1; }

## integration-stock: the containerd suite and the core end-to-end tests again on the stock
## path (containerd's runc shim: SPAWN_PATH=stock, fast_path off), so the fallback keeps working.
STOCK_E2E := TestHello|TestChunkedRoundTrip|TestPoolSingleUse|TestTimeout|TestClientDisconnect|TestNonZeroExit|TestCrashRecovery|TestCleanup|TestManagedContainerdRestart|TestUserns|TestUsageMetering
integration-stock: tools host images build
	@[ "$$(id -u)" = 0 ] || { echo "integration tests need root (containers)"; exit 1; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) SPAWN_PATH=stock SPAWN_FAST_PATH=off \
		$(GO) test -count=1 -p 1 -timeout 20m -tags integration -v ./integration/containerd/ 2>&1 | tee $(BUILD)/integration-stock.log | grep -E '^(--- |PASS|FAIL|ok|panic)'
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) SPAWN_FAST_PATH=off \
		$(GO) test -count=1 -p 1 -timeout 20m -tags integration -v -run '^($(STOCK_E2E))$$' ./integration/e2e/ 2>&1 | tee -a $(BUILD)/integration-stock.log | grep -E '^(--- |PASS|FAIL|ok|panic)'
	@! grep -qE -- '^\s*--- SKIP' $(BUILD)/integration-stock.log || { echo "FAIL: real tests were skipped"; exit 1; }
	@n=$$(grep -cE '^--- PASS: ($(STOCK_E2E)) ' $(BUILD)/integration-stock.log); [ "$$n" = 11 ] || { echo "FAIL: $$n of 11 core e2e tests passed on the stock path"; exit 1; }

## test-fleet: the fleet end-to-end test (integration/fleet, build tag fleet): three CPU-capped
## nodes in network namespaces, each its own Caddy and managed containerd, behind a front Caddy,
## images from a registry on the lab's bridge; policy comparison, SIGKILL, restart, drain.
test-fleet: tools host images build
	@[ "$$(id -u)" = 0 ] || { echo "the fleet test needs root (network namespaces, containers)"; exit 1; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) \
		$(GO) test -count=1 -timeout 15m -tags 'integration fleet' -v ./integration/fleet/ 2>&1 | tee $(BUILD)/fleet.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' ; \
		! grep -qE -- '^\s*--- SKIP' $(BUILD)/fleet.log || { echo "FAIL: real tests were skipped"; exit 1; }

## integration-address: the core end-to-end tests in address mode against the containerd releases
## hosts run (CONTAINERD_HOST_VERSIONS and the pinned CONTAINERD_VERSION), each a separate daemon
## with its release's stock config, and the refusal of CONTAINERD_REFUSED_VERSION (build tag address).
ADDRESS_HOST_DIRS := $(BIN) $(foreach v,$(CONTAINERD_HOST_VERSIONS),$(TOOLS)/containerd-$(v:v%=%)/bin)
integration-address: tools host images build containerd-hosts
	@[ "$$(id -u)" = 0 ] || { echo "integration tests need root (containers)"; exit 1; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) SPAWN_CONTAINERD_HOSTS="$(ADDRESS_HOST_DIRS)" \
		SPAWN_CONTAINERD_REFUSED=$(TOOLS)/containerd-$(CONTAINERD_REFUSED_VERSION:v%=%)/bin \
		$(GO) test -count=1 -p 1 -timeout 20m -tags 'integration address' -v -run '^TestAddressMode' ./integration/e2e/ 2>&1 | tee $(BUILD)/integration-address.log | grep -E '^ *(--- |PASS|FAIL|ok|panic)'
	@! grep -qE -- '^\s*--- SKIP' $(BUILD)/integration-address.log || { echo "FAIL: real tests were skipped"; exit 1; }
	@for v in $(CONTAINERD_VERSION) $(CONTAINERD_HOST_VERSIONS); do \
		grep -qE -- "^    --- PASS: TestAddressMode/containerd-$${v#v} " $(BUILD)/integration-address.log || { echo "FAIL: address mode did not pass against containerd $$v"; exit 1; }; \
	done
## test-chart: render the Helm chart in deploy/ with the pinned helm (default values and
## variants) and decode every object strictly into k8s.io/api types, checking its invariants
test-chart: $(HELM_STAMP)
	@mkdir -p $(BUILD)
	SPAWN_HELM=$(BIN)/helm $(GO) test -count=1 -tags chart -v ./deploy/ 2>&1 | tee $(BUILD)/chart.log | grep -E '^(=== RUN|\s*--- |PASS|FAIL|ok|panic)'
	@! grep -qE -- '^\s*--- SKIP' $(BUILD)/chart.log || { echo "FAIL: chart tests were skipped"; exit 1; }

$(HELM_STAMP):
	@mkdir -p $(BIN)
	@echo "building helm $(HELM_VERSION) (once; ~3 min)"
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
## test-vm: the core end-to-end tests (integration/vm: fast and stock path) on a pure cgroup v2
## host: Debian's cloud kernel (pinned, fetched with apt-get download into build/vm) under qemu,
## KVM if it boots, else software emulation (~10 min here under emulation)
VM_KERNEL_PACKAGE := linux-image-6.1.0-50-cloud-amd64
VM_KERNEL_VERSION := 6.1.176-1
VM_DIR            := $(BUILD)/vm
VM_KERNEL_STAMP   := $(VM_DIR)/.kernel-$(VM_KERNEL_VERSION)
test-vm: tools images build $(VM_KERNEL_STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "test-vm needs root (containers in the guest, apt)"; exit 1; }
	@command -v qemu-system-x86_64 >/dev/null || { echo "installing Debian package qemu-system-x86"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) SPAWN_VM_KERNEL=$(VM_DIR)/kernel SPAWN_VM_WORK=$(VM_DIR)/run \
		$(GO) test -count=1 -timeout 30m -tags vm -v ./integration/vm/ 2>&1 | tee $(VM_DIR)/test-vm.log | grep -E '^(\s*--- |PASS|FAIL|ok|panic|\s+vm_test)'
	@! grep -qE -- '^\s*--- SKIP' $(VM_DIR)/test-vm.log || { echo "FAIL: real tests were skipped"; exit 1; }

$(VM_KERNEL_STAMP):
	@mkdir -p $(VM_DIR)
	rm -rf $(VM_DIR)/kernel
	cd $(VM_DIR) && { apt-get download $(VM_KERNEL_PACKAGE)=$(VM_KERNEL_VERSION) || \
		{ apt-get update -qq && apt-get download $(VM_KERNEL_PACKAGE)=$(VM_KERNEL_VERSION); }; }
	dpkg-deb -x $(VM_DIR)/$(VM_KERNEL_PACKAGE)_$(VM_KERNEL_VERSION)_amd64.deb $(VM_DIR)/kernel
	@touch $@

## bench: latency and throughput against host CGI and naive per-request containers, the fast path
## against the stock path, pool policies on a bursty trace (BENCH_ONLY=paths|pools for one part),
## then bench-fleet
bench: tools host images build
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) $(GO) run -tags integration ./bench $(if $(BENCH_ONLY),-only $(BENCH_ONLY))
	$(MAKE) --no-print-directory bench-fleet

## bench-fleet: fresh containers/s through a front Caddy with 1, 2 and 3 CPU-capped nodes of the
## fleet lab (test-fleet's), in one run, and the scaling ratios
bench-fleet: tools host images build
	@[ "$$(id -u)" = 0 ] || { echo "the fleet bench needs root (network namespaces, containers)"; exit 1; }
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) \
		$(GO) test -count=1 -timeout 20m -tags 'integration fleet' -run '^$$' -bench '^BenchmarkFleetScaling$$' -benchtime 1x -v ./integration/fleet/

## soak: many mixed requests (ok, exit, timeout, disconnect, oversized); fds, goroutines, mounts,
## shims, containers and snapshots must return to their starting counts. SOAK_REQUESTS=10000
soak: tools images build
	SPAWN_IMAGES=$(IMAGES) SPAWN_CADDY=$(CADDY) \
		$(GO) test -count=1 -timeout 60m -tags 'integration soak' -run '^TestSoak$$' -v ./integration/e2e/

## build: the Caddy binary with caddy-spawn linked in
build: $(CADDY)

$(CADDY): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	$(GO) build -o $@ ./cmd/caddy

## images: the example and test images, built from source into OCI archives
images: deps
	@mkdir -p $(IMAGES)
	$(GO) run ./cmd/spawn-mkimage -out $(IMAGES)

## tools: pinned containerd, its runc shim, ctr and runc in .tools/bin
tools: deps $(CONTAINERD_STAMP) $(RUNC_STAMP)

$(CONTAINERD_STAMP):
	@mkdir -p $(BIN)
	@echo "building containerd $(CONTAINERD_VERSION) (once; ~2 min)"
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install -tags 'no_btrfs no_devmapper no_zfs' \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_VERSION) \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD_VERSION) \
		github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD_VERSION)
	@touch $@

## containerd-hosts: the containerd releases of CONTAINERD_HOST_VERSIONS and
## CONTAINERD_REFUSED_VERSION with their runc shims, each in .tools/containerd-<version>/bin
CONTAINERD_HOST_DIRS := $(foreach v,$(CONTAINERD_HOST_VERSIONS) $(CONTAINERD_REFUSED_VERSION),$(TOOLS)/containerd-$(v:v%=%))
containerd-hosts: $(addsuffix /.built,$(CONTAINERD_HOST_DIRS))

# containerd_module: the Go module of containerd release $(1) ("1.7.35": v1's has no suffix).
containerd_module = github.com/containerd/containerd$(if $(filter 1.%,$(1)),,/v$(firstword $(subst ., ,$(1))))

$(TOOLS)/containerd-%/.built:
	@mkdir -p $(@D)/bin
	@echo "building containerd v$* and its runc shim into $(@D) (once; ~2 min)"
	@# Built inside the downloaded module, as its own main module: `go install pkg@version`
	@# refuses v1.7's go.mod (it has an exclude directive).
	src=$$($(GO) mod download -json $(call containerd_module,$*)@v$* | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	cd "$$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly $(GO) build -tags 'no_btrfs no_devmapper no_zfs' \
		-o $(@D)/bin/ ./cmd/containerd ./cmd/containerd-shim-runc-v2
	@touch $@

$(RUNC_STAMP):
	@mkdir -p $(BIN)
	@echo "building runc $(RUNC_VERSION) with seccomp (once)"
	GOBIN=$(BIN) CGO_ENABLED=1 $(GO) install -tags seccomp github.com/opencontainers/runc@$(RUNC_VERSION)
	@touch $@

# Debian packages: busybox-static (shell image), libseccomp-dev (runc),
# qemu-user-static (the unit test that runs the linux/arm64 spawn-init), and
# the C compilers for spawn-init on both architectures (the unit test that
# rebuilds the committed binaries; spawner/initbin/gen.go).
CROSS_GCC_PACKAGE := $(if $(filter aarch64 arm64,$(shell uname -m)),gcc-x86-64-linux-gnu,gcc-aarch64-linux-gnu)
DEPS_PACKAGES := busybox-static libseccomp-dev pkg-config qemu-user-static crun gcc $(CROSS_GCC_PACKAGE)
deps:
	@if [ ! -x /bin/busybox ] || ! pkg-config --exists libseccomp 2>/dev/null || ! command -v qemu-aarch64-static >/dev/null || ! command -v crun >/dev/null \
		|| ! command -v x86_64-linux-gnu-gcc >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then \
		echo "installing Debian packages: $(DEPS_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPS_PACKAGES) >/dev/null; \
	fi

## host: let crun (the fast path's runtime) run on a cgroup v1 "hybrid" host
## whose unified hierarchy holds the hugetlb controller (this machine kind):
## mount a v1 hugetlb hierarchy, which moves hugetlb off the unified tree; and
## remount the cgroup2 hierarchy with favordynmods (Linux >= 6.1).
## This changes the host's cgroup mounts, so only `make run`, `make test` and
## `make bench` do it, never the spawn app (it only logs a hint).
host: deps
	@if [ -f /sys/fs/cgroup/unified/cgroup.controllers ] && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers; then \
		echo "host: mounting a cgroup v1 hugetlb hierarchy so crun can run on this hybrid host"; \
		mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; \
	fi
	@# favordynmods: moving a process into a cgroup then no longer waits for an RCU grace
	@# period (~20 ms per container start measured here); forks and exits cost a little more.
	@v2=$$(awk '$$3 == "cgroup2" {print $$2; exit}' /proc/mounts); \
	if [ -n "$$v2" ] && ! awk -v m="$$v2" '$$2 == m' /proc/mounts | grep -q favordynmods; then \
		echo "host: remounting $$v2 with favordynmods (faster container starts)"; \
		mount -o remount,favordynmods "$$v2" || echo "host: favordynmods not supported by this kernel; containers start slower"; \
	fi

## golden: rewrite the Caddyfile adapt goldens from the current adapter (review the diff!)
golden:
	$(GO) test ./integration/caddyfile_adapt/ -update

## lint: golangci-lint (.golangci.yml, Caddy's linters; build tags integration and soak
## included), then builds for other platforms Caddy runs on
lint: $(GOLANGCI_LINT_STAMP)
	$(BIN)/golangci-lint run ./...
	GOOS=darwin  GOARCH=arm64 $(GO) build ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...
	GOOS=linux   GOARCH=arm64 $(GO) build ./...

$(GOLANGCI_LINT_STAMP):
	@mkdir -p $(BIN)
	@echo "building golangci-lint $(GOLANGCI_LINT_VERSION) (once; ~2 min)"
	GOBIN=$(BIN) CGO_ENABLED=0 $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@touch $@

clean:
	rm -rf $(BUILD)
