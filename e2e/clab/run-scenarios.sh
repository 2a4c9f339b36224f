#!/usr/bin/env bash
# Tabby's end-to-end scenarios on a containerlab topology: a kind cluster (k8s-kind) behind an
# FRR top-of-rack router (tabby.clab.yml). Needs Docker, containerlab, kind, kubectl, helm.
# Tabby's CI cannot run this (no Docker engine there); it runs the same scenarios on network
# namespaces instead.
#
#   e2e/clab/run-scenarios.sh deploy     build images, deploy the lab, install the chart
#   e2e/clab/run-scenarios.sh test [N..] run all scenarios, or only those numbered N
#   e2e/clab/run-scenarios.sh destroy    remove the lab
#   e2e/clab/run-scenarios.sh all        deploy, test, destroy (destroy also on failure)
#
# Every scenario asserts outcomes (routes on the ToR and the nodes, pod addresses, packet loss,
# session states), not exit codes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
topo="$here/tabby.clab.yml"
tor="clab-tabby-tor1"
cluster="k8s01"
nodes=(k8s01-control-plane k8s01-worker k8s01-worker2)
ns="kube-system"
version="0.1.0"
md5="tabby-lab-md5"   # the password in tor1/frr.conf
test_image="busybox:1.36"
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
k() { kubectl --context "kind-$cluster" "$@"; }

say() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
need() { for t in "$@"; do command -v "$t" >/dev/null || die "$t is required"; done; }

# wait_for <description> <seconds> <command...>: retries the command until it succeeds.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || die "timed out after ${secs}s: $what"
        sleep 1
    done
    echo "ok: $what"
}

vtysh() { docker exec "$tor" vtysh -c "$1"; }
# Prefixes tor1 has installed from BGP, one per line.
tor_routes() { vtysh "show ip route bgp json" | python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin))))'; }
# Block CIDRs the cluster holds (optionally of one node), one per line.
blocks() {
    k get ipamblocks -o json | python3 -c '
import json, sys
node = sys.argv[1] if len(sys.argv) > 1 else None
for b in json.load(sys.stdin)["items"]:
    if node is None or b["spec"]["node"] == node:
        print(b["spec"]["cidr"])' "$@" | sort
}
tor_has_all_blocks() { local want; want="$(blocks)"; [ -n "$want" ] && comm -23 <(echo "$want") <(tor_routes) | { ! grep -q .; }; }
tor_has_none_of() { comm -12 <(printf '%s\n' "$@" | sort) <(tor_routes) | { ! grep -q .; }; }
sessions_established() { vtysh "show bgp ipv4 unicast summary json" | python3 -c '
import json, sys
peers = json.load(sys.stdin)["peers"]
sys.exit(0 if peers and all(p["state"] == "Established" for p in peers.values()) else 1)'; }
sessions_down() { ! sessions_established; }
pod_ip() { k get pod "$1" -o jsonpath='{.status.podIP}'; }

deploy() {
    need docker containerlab kind kubectl helm python3
    say "building images"
    docker build -f "$repo/images/agent.Dockerfile" -t "tabby-agent:$version" "$repo"
    docker build -f "$repo/images/ipam-controller.Dockerfile" -t "tabby-ipam-controller:$version" "$repo"
    say "deploying the lab"
    (cd "$here" && containerlab deploy -t "$topo" --reconfigure)
    kind load docker-image --name "$cluster" "tabby-agent:$version" "tabby-ipam-controller:$version"
    say "installing the chart"
    k -n "$ns" create secret generic tabby-bgp-passwords --from-literal=tor1="$md5" \
        --dry-run=client -o yaml | k apply -f -
    helm --kube-context "kind-$cluster" upgrade --install tabby "$repo/charts/tabby" -n "$ns" \
        -f "$here/values.yaml" --wait --timeout 5m
    wait_for "every node Ready" 180 k wait --for=condition=Ready node --all --timeout=5s
    # Two test pods per node.
    for n in "${nodes[@]}"; do
        for i in 1 2; do
            k run "t-${n##*-}-$i" --image="$test_image" --restart=Never \
                --overrides="{\"spec\":{\"nodeName\":\"$n\",\"tolerations\":[{\"operator\":\"Exists\"}]}}" \
                -- sleep 86400 2>/dev/null || true
        done
    done
    wait_for "test pods running" 180 k wait --for=condition=Ready pod -l run --timeout=5s
}

destroy() { (cd "$here" && containerlab destroy -t "$topo" --cleanup) || true; }

# 1. Mesh and ToR: the ToR learns every block; pods reach each other across nodes; the
#    fabric carries plain IP (no IP-in-IP, no VXLAN).
s1() {
    say "1. routes to every block, pod-to-pod across nodes, plain IP on the fabric"
    wait_for "every session to tor1 Established" 60 sessions_established
    wait_for "tor1 learned every block" 60 tor_has_all_blocks
    local a b; a="$(pod_ip t-plane-1)"; b="$(pod_ip t-worker2-1)"
    docker exec "$tor" sh -c 'timeout 8 tcpdump -ni any -c 50 "ip proto 4 or udp port 4789 or udp port 8472" 2>/dev/null | wc -l' > /tmp/tabby-encap &
    docker exec "$tor" sh -c "timeout 8 tcpdump -ni eth1 -c 4 'icmp and host $a and host $b' 2>/dev/null | wc -l" > /tmp/tabby-icmp &
    sleep 1
    k exec t-plane-1 -- ping -c 5 -W 1 "$b" | grep -q " 0% packet loss" || die "ping $a -> $b lost packets"
    k exec t-worker-1 -- ping -c 5 -W 1 "$(pod_ip t-worker2-2)" | grep -q " 0% packet loss" || die "ping worker -> worker2 lost packets"
    wait
    [ "$(cat /tmp/tabby-encap)" = "0" ] || die "encapsulated packets seen on the fabric"
    [ "$(cat /tmp/tabby-icmp)" -ge 1 ] || die "the pod-to-pod ICMP did not cross tor1 as plain IP"
    echo "ok: plain IP between pods across nodes"
}

# 2. Scale out: kind cannot add a node to a running cluster; the namespace lab covers it.
s2() { say "2. scale out: not possible with kind (nodes are fixed at creation); skipped"; }

# 3. Node removed: its routes are withdrawn everywhere, its blocks released after its pods go.
s3() {
    say "3. node removed"
    local gone=k8s01-worker2 cidrs
    mapfile -t cidrs < <(blocks "$gone")
    [ ${#cidrs[@]} -gt 0 ] || die "$gone has no block"
    docker exec "$gone" systemctl stop kubelet
    k delete node "$gone" --wait=true
    wait_for "tor1 withdrew ${cidrs[*]}" 60 tor_has_none_of "${cidrs[@]}"
    wait_for "k8s01-worker has no route to ${cidrs[0]}" 60 \
        sh -c "! docker exec k8s01-worker ip route show ${cidrs[0]} | grep -q ."
    wait_for "blocks of $gone released" 420 sh -c "[ -z \"\$(kubectl --context kind-$cluster get ipamblocks -o jsonpath='{.items[?(@.spec.node==\"$gone\")].metadata.name}')\" ]"
    docker exec "$gone" systemctl start kubelet
    wait_for "$gone back" 180 k wait --for=condition=Ready node "$gone" --timeout=5s
}

# 4. Agent restart under a ping flood across nodes: zero lost packets.
s4() {
    say "4. agent restart under a ping flood"
    local dst; dst="$(pod_ip t-worker-1)"
    k exec t-plane-1 -- sh -c "ping -i 0.01 -w 40 -q $dst" > /tmp/tabby-flood &
    sleep 3
    k -n "$ns" rollout restart ds/tabby-agent
    k -n "$ns" rollout status ds/tabby-agent --timeout=180s
    wait
    grep -q " 0% packet loss" /tmp/tabby-flood || die "packets lost during the agent restart: $(tail -2 /tmp/tabby-flood)"
    echo "ok: $(grep 'packet loss' /tmp/tabby-flood)"
}

# 5. ToR restart (FRR stopped and started): routes come back.
s5() {
    say "5. ToR restart"
    docker exec "$tor" /usr/lib/frr/frrinit.sh restart
    wait_for "sessions to tor1 re-established" 90 sessions_established
    wait_for "tor1 re-learned every block" 60 tor_has_all_blocks
}

# 6. API server faults: the API server restarted; controller and agents recover with no
#    duplicate address and no lost route.
s6() {
    say "6. API server restart"
    local before; before="$(tor_routes)"
    docker exec k8s01-control-plane sh -c 'crictl stop $(crictl ps -q --name kube-apiserver)'
    wait_for "API server back" 120 k get --raw /readyz
    k run t-after-api --image="$test_image" --restart=Never -- sleep 86400
    wait_for "a pod starts after the restart" 120 k wait --for=condition=Ready pod t-after-api --timeout=5s
    local dups; dups="$(k get pods -A -o jsonpath='{range .items[?(@.spec.hostNetwork!=true)]}{.status.podIP}{"\n"}{end}' | grep . | sort | uniq -d)"
    [ -z "$dups" ] || die "duplicate pod addresses: $dups"
    comm -23 <(echo "$before") <(tor_routes) | { ! grep -q .; } || die "routes lost after the API restart"
    k delete pod t-after-api --wait=false
}

# 7. Dual-stack needs a dual-stack kind cluster and an IPv6 pool; the namespace lab covers it.
s7() { say "7. dual-stack: this topology is IPv4-only; skipped"; }

# 8. MD5: the right password is Established; a wrong one is not, with the reason reported.
s8() {
    say "8. TCP MD5 to the ToR"
    sessions_established || die "sessions not Established with the right password"
    k -n "$ns" create secret generic tabby-bgp-passwords --from-literal=tor1=wrong-password \
        --dry-run=client -o yaml | k apply -f -
    wait_for "sessions drop with a wrong password" 60 sessions_down
    wait_for "NodeNetworkStatus names the cause" 60 sh -c \
        "kubectl --context kind-$cluster get nodenetworkstatus -o yaml | grep -qi -e md5 -e password"
    k -n "$ns" create secret generic tabby-bgp-passwords --from-literal=tor1="$md5" \
        --dry-run=client -o yaml | k apply -f -
    wait_for "sessions back with the right password" 60 sessions_established
}

# 9. Pool disabled, then deleted: no new allocations from it; deletion completes once drained.
s9() {
    say "9. pool disabled then deleted"
    k apply -f - <<'EOF'
apiVersion: tabby.dev/v1alpha1
kind: IPPool
metadata: {name: second}
spec: {cidr: 10.245.0.0/16, blockSize: 26}
EOF
    k patch ippool default-ipv4 --type merge -p '{"spec":{"disabled":true}}'
    k run t-new --image="$test_image" --restart=Never -- sleep 86400
    wait_for "new pod running" 120 k wait --for=condition=Ready pod t-new --timeout=5s
    case "$(pod_ip t-new)" in 10.245.*) echo "ok: new pod from pool second";; *) die "new pod got $(pod_ip t-new), not from pool second";; esac
    k delete ippool default-ipv4 --wait=false
    sleep 5
    k get ippool default-ipv4 >/dev/null 2>&1 || die "pool default-ipv4 deleted while pods still use it"
    k delete pod -l run --wait=true
    wait_for "pool default-ipv4 gone once drained" 420 sh -c "! kubectl --context kind-$cluster get ippool default-ipv4"
}

# 10. Pool exhausted: a clear CNI error, then recovery.
s10() {
    say "10. pool exhausted"
    k apply -f - <<'EOF'
apiVersion: tabby.dev/v1alpha1
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.246.0.0/28, blockSize: 28}
EOF
    for i in $(seq 1 20); do
        k run "t-tiny-$i" --image="$test_image" --restart=Never \
            --annotations=tabby.dev/ippools=tiny -- sleep 86400 >/dev/null
    done
    wait_for "a clear exhaustion error in the pod events" 120 sh -c \
        "kubectl --context kind-$cluster get events --field-selector reason=FailedCreatePodSandBox -o jsonpath='{.items[*].message}' | grep -qi exhausted"
    k delete pod t-tiny-1 t-tiny-2 t-tiny-3 t-tiny-4 t-tiny-5 --wait=true
    k delete pod t-tiny-20 --wait=true
    k run t-tiny-again --image="$test_image" --restart=Never --annotations=tabby.dev/ippools=tiny -- sleep 86400
    wait_for "a pod starts once addresses are free again" 420 k wait --for=condition=Ready pod t-tiny-again --timeout=5s
    k delete pod -l run=t-tiny-again --wait=false
}

test_all() {
    need docker kubectl python3
    local picks=("$@")
    [ ${#picks[@]} -gt 0 ] || picks=(1 2 3 4 5 6 7 8 9 10)
    for n in "${picks[@]}"; do "s$n"; done
    say "all scenarios passed: ${picks[*]}"
}

case "${1:-all}" in
    deploy) deploy ;;
    test) shift; test_all "$@" ;;
    destroy) destroy ;;
    all) trap destroy EXIT; deploy; test_all ;;
    *) die "usage: $0 deploy|test [N..]|destroy|all" ;;
esac
