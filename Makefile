# Tabby — the two commands in the README are `make lab` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test deps chart-tests fmt-check clippy unit-tests fuzz-smoke lab lab-down

## test: install what is missing, then format check, clippy and every test.
test: deps fmt-check clippy unit-tests

## deps: Debian packages (as root), the pinned helm/kubectl binaries in .tools/bin and the
## pinned kubernetes-validate in .tools/ (the chart suite runs inside `cargo test --workspace`).
deps:
	./scripts/install-deps.sh
	./scripts/fetch-tools.sh
	./scripts/test-chart.sh --install

## chart-tests: only the Helm chart suite (a quick loop while editing the chart).
chart-tests: deps
	./scripts/test-chart.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit-tests:
	$(CARGO) test --workspace --locked --no-fail-fast

## lab: as root, the whole system live in network namespaces (kube-sim, the chart's CRDs and
## default objects rendered by the pinned helm, IPAM controller, node agents, an FRR
## top-of-rack, pods); prints what it built and leaves it running.
## Options: make lab LAB_ARGS="--nodes 5 --ipv6 --no-mesh"
LAB_BINS := -p tabby-lab -p tabby-kube-sim -p tabby-ipam-controller -p tabby-agent -p tabby-cni
lab:
	./scripts/install-deps.sh
	./scripts/fetch-tools.sh
	$(CARGO) build --release --locked $(LAB_BINS)
	./target/release/tabby-lab up $(LAB_ARGS)

## lab-down: remove everything `make lab` made (processes, namespaces, files); safe to rerun.
lab-down:
	@test -x target/release/tabby-lab || $(CARGO) build --release --locked -p tabby-lab
	./target/release/tabby-lab down
