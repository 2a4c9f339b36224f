{{/*
Cross-field rules that values.schema.json cannot state with a clear message. Each failure names
the value that is wrong. Rendered (and so checked) by every `helm template/install/lint`.
*/}}
{{- define "tabby.validate" -}}
{{- $v4 := "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}" -}}
{{- $v6 := "[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}" -}}
{{- $cidrRe := printf "^(%s/([0-9]|[12][0-9]|3[0-2])|%s/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$" $v4 $v6 -}}
{{- $ipRe := printf "^(%s|%s)$" $v4 $v6 -}}
{{- $cidrs := list -}}
{{- range $i, $p := .Values.ipPools -}}
{{- $cidrs = append $cidrs (list (printf "ipPools[%d] (%s).cidr" $i $p.name) $p.cidr) -}}
{{- end -}}
{{- range $field := list "serviceClusterIPs" "serviceExternalIPs" "serviceLoadBalancerIPs" -}}
{{- range $i, $c := index $.Values.bgp.configuration $field | default list -}}
{{- $cidrs = append $cidrs (list (printf "bgp.configuration.%s[%d]" $field $i) $c) -}}
{{- end -}}
{{- end -}}
{{- range $c := $cidrs -}}
{{- if not (regexMatch $cidrRe (index $c 1)) -}}
{{- fail (printf "%s: %q is not a CIDR such as 10.244.0.0/16 or fd00:10:244::/56" (index $c 0) (index $c 1)) -}}
{{- end -}}
{{- end -}}
{{- $asns := list (list "bgp.configuration.asNumber" .Values.bgp.configuration.asNumber) -}}
{{- range $i, $p := .Values.bgp.peers -}}
{{- if hasKey $p "asNumber" -}}
{{- $asns = append $asns (list (printf "bgp.peers[%d] (%s).asNumber" $i $p.name) $p.asNumber) -}}
{{- end -}}
{{- if and (hasKey $p "peerIP") (not (regexMatch $ipRe $p.peerIP)) -}}
{{- fail (printf "bgp.peers[%d] (%s).peerIP: %q is not an IPv4 or IPv6 address" $i $p.name $p.peerIP) -}}
{{- end -}}
{{- end -}}
{{- range $a := $asns -}}
{{- if eq (int64 (index $a 1)) 23456 -}}
{{- fail (printf "%s: 23456 is AS_TRANS, reserved for 2-octet speakers (RFC 6793); use another AS number" (index $a 0)) -}}
{{- end -}}
{{- end -}}
{{- $names := dict -}}
{{- range $i, $p := .Values.ipPools -}}
{{- $where := printf "ipPools[%d] (%s)" $i $p.name -}}
{{- if hasKey $names $p.name -}}
{{- fail (printf "%s: the pool name %q is used twice" $where $p.name) -}}
{{- end -}}
{{- $_ := set $names $p.name true -}}
{{- $prefix := splitList "/" $p.cidr | last | atoi -}}
{{- $v6 := contains ":" $p.cidr -}}
{{- if hasKey $p "blockSize" -}}
{{- $bs := int $p.blockSize -}}
{{- if and (not $v6) (or (lt $bs 20) (gt $bs 32)) -}}
{{- fail (printf "%s: blockSize %d is outside 20-32, the range for an IPv4 cidr (%s)" $where $bs $p.cidr) -}}
{{- end -}}
{{- if and $v6 (or (lt $bs 116) (gt $bs 128)) -}}
{{- fail (printf "%s: blockSize %d is outside 116-128, the range for an IPv6 cidr (%s)" $where $bs $p.cidr) -}}
{{- end -}}
{{- if lt $bs $prefix -}}
{{- fail (printf "%s: blockSize %d is shorter than the cidr's prefix length /%d: a block cannot be larger than its pool" $where $bs $prefix) -}}
{{- end -}}
{{- else -}}
{{- if and (not $v6) (gt $prefix 26) -}}
{{- fail (printf "%s: cidr %s is smaller than one default /26 block; set blockSize" $where $p.cidr) -}}
{{- end -}}
{{- if and $v6 (gt $prefix 122) -}}
{{- fail (printf "%s: cidr %s is smaller than one default /122 block; set blockSize" $where $p.cidr) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $peers := dict -}}
{{- range $i, $p := .Values.bgp.peers -}}
{{- $where := printf "bgp.peers[%d] (%s)" $i $p.name -}}
{{- if hasKey $peers $p.name -}}
{{- fail (printf "%s: the peer name %q is used twice" $where $p.name) -}}
{{- end -}}
{{- $_ := set $peers $p.name true -}}
{{- if eq (hasKey $p "peerIP") (hasKey $p "peerSelector") -}}
{{- fail (printf "%s: set exactly one of peerIP (a router) and peerSelector (nodes acting as peers, e.g. route reflectors)" $where) -}}
{{- end -}}
{{- if and (hasKey $p "peerIP") (not (hasKey $p "asNumber")) -}}
{{- fail (printf "%s: asNumber is required with peerIP %s" $where $p.peerIP) -}}
{{- end -}}
{{- if and (hasKey $p "node") (hasKey $p "nodeSelector") -}}
{{- fail (printf "%s: set at most one of node and nodeSelector (neither means every node)" $where) -}}
{{- end -}}
{{- with $p.timers -}}
{{- if and (hasKey . "holdTime") (hasKey . "keepaliveTime") -}}
{{- if eq (int .holdTime) 0 -}}
{{- if ne (int .keepaliveTime) 0 -}}
{{- fail (printf "%s: timers.keepaliveTime must be 0 when holdTime is 0 (RFC 4271 §4.4)" $where) -}}
{{- end -}}
{{- else if ge (int .keepaliveTime) (int .holdTime) -}}
{{- fail (printf "%s: timers.keepaliveTime %d must be less than holdTime %d (RFC 4271 §4.4)" $where (int .keepaliveTime) (int .holdTime)) -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey . "holdTime") (gt (int .holdTime) 0) (lt (int .holdTime) 3) -}}
{{- fail (printf "%s: timers.holdTime %d must be 0 or at least 3 seconds (RFC 4271 §4.2)" $where (int .holdTime)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.bgp.configuration -}}
{{- if and (hasKey . "holdTime") (gt (int .holdTime) 0) (lt (int .holdTime) 3) -}}
{{- fail (printf "bgp.configuration.holdTime %d must be 0 or at least 3 seconds (RFC 4271 §4.2)" (int .holdTime)) -}}
{{- end -}}
{{- end -}}
{{- if ge (int .Values.controller.leaseGrace) (int .Values.controller.leaseDuration) -}}
{{- fail (printf "controller.leaseGrace (%d s) must be less than controller.leaseDuration (%d s): the leader renews that long before the Lease expires" (int .Values.controller.leaseGrace) (int .Values.controller.leaseDuration)) -}}
{{- end -}}
{{- if eq (int .Values.agent.statusPort) (int .Values.controller.metricsPort) -}}
{{- fail (printf "agent.statusPort and controller.metricsPort are both %d: both components use the host network, so a node running both would have a port clash" (int .Values.agent.statusPort)) -}}
{{- end -}}
{{- if and .Values.controller.podDisruptionBudget.enabled (ge (int .Values.controller.podDisruptionBudget.minAvailable) (int .Values.controller.replicas)) -}}
{{- fail (printf "controller.podDisruptionBudget.minAvailable (%d) must be less than controller.replicas (%d), or no node could ever be drained" (int .Values.controller.podDisruptionBudget.minAvailable) (int .Values.controller.replicas)) -}}
{{- end -}}
{{- end -}}
