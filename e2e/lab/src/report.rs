//! What `tabby-lab up` and `tabby-lab status` print: nodes and their blocks, BGP sessions, the
//! routes the ToR learned, pods, one ping across nodes, and how to explore.
//!
//! Owns the gathering (through [`Lab`]'s queries) and the text layout. Must not change the lab.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::lab::{Lab, PingResult};
use crate::plan;

/// One BGP session as a node's agent reports it in its NodeNetworkStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub peer: String,
    pub kind: String,
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub name: String,
    pub netns: String,
    pub address: String,
    pub blocks: Vec<String>,
    pub ready: String,
    pub sessions: Vec<Session>,
    pub routes: usize,
}

/// Everything printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub prefix: String,
    pub dir: String,
    pub nodes: Vec<NodeLine>,
    pub tor_netns: String,
    pub tor_sessions: BTreeMap<String, String>,
    pub tor_routes: BTreeMap<String, Vec<String>>,
    /// pod netns -> (node, pod name, addresses)
    pub pods: Vec<(String, String, String, Vec<String>)>,
    /// (from pod netns, to address, result), one per family.
    pub pings: Vec<(String, String, Result<PingResult, String>)>,
    pub first_pod: Option<String>,
}

impl Report {
    /// Gathers the report from a running lab, with one ping from the first node's first pod
    /// to the last node's first pod.
    pub fn gather(lab: &Lab) -> Report {
        let blocks = lab.blocks().unwrap_or_default();
        let statuses = lab.node_statuses().unwrap_or_default();
        let mut nodes = Vec::new();
        for n in lab.nodes() {
            let sessions = statuses
                .get(&n.name)
                .and_then(|s| s.status.as_ref())
                .map(|s| {
                    s.sessions
                        .iter()
                        .map(|x| Session {
                            peer: x.peer_ip.clone(),
                            kind: format!("{:?}", x.peer_type).to_lowercase(),
                            state: format!("{:?}", x.state),
                            // An Established session's last error is history.
                            detail: match &x.last_error {
                                Some(e) if format!("{:?}", x.state) != "Established" => e.clone(),
                                _ => format!(
                                    "{} received / {} advertised",
                                    x.prefixes_received, x.prefixes_advertised
                                ),
                            },
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ready = match lab.agent_ready(&n.name) {
                Some((200, _)) => "ready".to_string(),
                Some((code, body)) => format!("not ready ({code}: {})", first_line(&body)),
                None => "not answering".to_string(),
            };
            nodes.push(NodeLine {
                address: n.ipv4.to_string(),
                blocks: blocks.get(&n.name).cloned().unwrap_or_default(),
                routes: lab.tabby_routes(&n.netns).map(|r| r.len()).unwrap_or(0),
                name: n.name,
                netns: n.netns,
                ready,
                sessions,
            });
        }
        let pods: Vec<_> = lab
            .pods()
            .iter()
            .map(|(ns, p)| {
                (
                    ns.clone(),
                    p.node.clone(),
                    p.name.clone(),
                    p.addresses.clone(),
                )
            })
            .collect();
        let all = lab.nodes();
        // One ping per family from the first node's first pod to the last node's first pod.
        let mut pings = Vec::new();
        if let (Some(a), Some(b)) = (all.first(), all.last())
            && all.len() > 1
            && let (Some(pa), Some(pb)) = (a.pods.first(), b.pods.first())
        {
            for to in [lab.pod_ipv4(&pb.netns), lab.pod_ipv6(&pb.netns)]
                .into_iter()
                .flatten()
            {
                let r = lab.ping(&pa.netns, &to, 3, 200).map_err(|e| e.to_string());
                pings.push((pa.netns.clone(), to, r));
            }
        }
        Report {
            prefix: lab.options().prefix.clone(),
            dir: lab.dir().display().to_string(),
            nodes,
            tor_netns: lab.tor_netns(),
            tor_sessions: lab.tor_sessions().unwrap_or_default(),
            tor_routes: lab.tor_routes().unwrap_or_default(),
            first_pod: all
                .first()
                .and_then(|n| n.pods.first())
                .map(|p| p.netns.clone()),
            pods,
            pings,
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Nodes (agent status, blocks from IPAMBlocks, Tabby routes in the kernel)"
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "  {:<8} {:<12} netns {:<18} agent {:<10} routes {:>2}  blocks {}",
                n.name,
                n.address,
                n.netns,
                n.ready,
                n.routes,
                if n.blocks.is_empty() {
                    "-".into()
                } else {
                    n.blocks.join(", ")
                }
            )?;
        }
        writeln!(f, "\nBGP sessions (each agent's NodeNetworkStatus)")?;
        for n in &self.nodes {
            if n.sessions.is_empty() {
                writeln!(f, "  {:<8} (no NodeNetworkStatus published)", n.name)?;
            }
            for s in &n.sessions {
                writeln!(
                    f,
                    "  {:<8} -> {:<12} {:<7} {:<12} {}",
                    n.name, s.peer, s.kind, s.state, s.detail
                )?;
            }
        }
        writeln!(f, "\nBGP sessions on the ToR (FRR, AS {})", plan::TOR_AS)?;
        if self.tor_sessions.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (peer, state) in &self.tor_sessions {
            writeln!(f, "  tor -> {peer:<12} {state}")?;
        }
        writeln!(f, "\nRoutes the ToR learned (selected, via next hop)")?;
        if self.tor_routes.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (prefix, hops) in &self.tor_routes {
            writeln!(f, "  {prefix:<20} via {}", hops.join(", "))?;
        }
        writeln!(f, "\nPods (made by tabby-cni through each node's agent)")?;
        for (ns, node, name, addrs) in &self.pods {
            writeln!(
                f,
                "  {name:<14} on {node:<8} {:<28} netns {ns}",
                addrs.join(", ")
            )?;
        }
        for (from, to, r) in &self.pings {
            let verdict = match r {
                Ok(p) if p.lost() == 0 => format!("OK, {}/{} replies", p.received, p.sent),
                Ok(p) => format!("LOST {} of {}", p.lost(), p.sent),
                Err(e) => format!("FAILED: {e}"),
            };
            writeln!(f, "\nPing across nodes: {from} -> {to}: {verdict}")?;
        }
        let mut how = String::new();
        let node1 = self.nodes.first().map(|n| n.netns.as_str()).unwrap_or("");
        let _ = writeln!(how, "\nExplore:");
        let _ = writeln!(
            how,
            "  kubectl --kubeconfig {}/kubeconfig get nodes,ippools,ipamblocks,bgppeers,nodenetworkstatuses",
            self.dir
        );
        let _ = writeln!(
            how,
            "  ip netns exec {node1} ip route show proto 84       # Tabby's routes on a node"
        );
        let _ = writeln!(
            how,
            "  ip netns exec {node1} curl -s 127.0.0.1:{}/metrics  # agent status endpoints (/healthz /readyz)",
            plan::AGENT_STATUS_PORT
        );
        let _ = writeln!(
            how,
            "  ip netns exec {} vtysh --vty_socket {}/tor -c 'show bgp summary'",
            self.tor_netns, self.dir
        );
        if let (Some(p), Some((_, to, _))) = (&self.first_pod, self.pings.first()) {
            let _ = writeln!(how, "  ip netns exec {p} ping {to}");
        }
        let _ = writeln!(
            how,
            "  logs: {}/logs/      remove everything: make lab-down",
            self.dir
        );
        f.write_str(&how)
    }
}
