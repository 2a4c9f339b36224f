#!/usr/bin/env bash
# Chart tests: installs the pinned kubernetes-validate into .tools/kubernetes-validate (a venv;
# the package's wheel is checked by sha256, its dependencies pinned by version), then runs the
# chart suite (`cargo test -p tabby-chart-tests`: helm lint/template over charts/tabby/ci,
# rejected values in charts/tabby/ci-bad, kubernetes-validate --strict for 1.33, RBAC audit,
# custom resources against the CRDs in kube-sim, containerlab files).
#
#   scripts/test-chart.sh            install (if needed) and run the suite
#   scripts/test-chart.sh --install  install only (what `make test` runs before cargo test)
#
# helm and kubectl come from scripts/fetch-tools.sh. Idempotent.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.tools/kubernetes-validate"
cache="${TABBY_TOOLS_CACHE:-$repo/.tools/cache}"

kv_version="1.37.0"   # ships schemas for Kubernetes 1.25-1.37; we validate against 1.33
kv_wheel="kubernetes_validate-${kv_version}-py3-none-any.whl"
kv_sha256="85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"
# Its dependencies, pinned (rpds-py is a binary wheel per platform, so it is pinned by version).
deps=(
    "jsonschema==4.26.0"
    "jsonschema-specifications==2025.9.1"
    "referencing==0.37.0"
    "rpds-py==2026.9.1"
    "attrs==26.1.0"
    "PyYAML==6.0.4"
    "packaging==26.4"
    "importlib_resources==7.1.0"
    "typing_extensions==4.16.0"
)

installed() {
    [ -x "$venv/bin/kubernetes-validate" ] &&
        [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null | awk '{print $NF}')" = "$kv_version" ]
}

install() {
    if installed; then
        return 0
    fi
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "test-chart: python3-venv is missing (scripts/install-deps.sh installs it as root);" \
            "the kubernetes-validate test will skip" >&2
        return 0
    fi
    mkdir -p "$cache"
    if ! [ -f "$cache/$kv_wheel" ] || [ "$(sha256sum "$cache/$kv_wheel" | cut -d' ' -f1)" != "$kv_sha256" ]; then
        rm -f "$cache/$kv_wheel"
        echo "test-chart: downloading kubernetes-validate==$kv_version"
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" \
            "kubernetes-validate==$kv_version"
    fi
    actual="$(sha256sum "$cache/$kv_wheel" | cut -d' ' -f1)"
    if [ "$actual" != "$kv_sha256" ]; then
        echo "test-chart: $kv_wheel has sha256 $actual, expected $kv_sha256" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        "${deps[@]}"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$cache/$kv_wheel"
    installed || { echo "test-chart: kubernetes-validate did not install" >&2; exit 1; }
    echo "test-chart: $("$venv/bin/kubernetes-validate" --version)"
}

install
if [ "${1:-}" = "--install" ]; then
    exit 0
fi
"$repo/scripts/fetch-tools.sh" >/dev/null
cd "$repo"
exec "${CARGO:-cargo}" test -p tabby-chart-tests --locked
