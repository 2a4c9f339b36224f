//! `natOutgoing`: pods of such pools reach destinations outside every pool with the node's
//! address.
//!
//! Owns exactly one nftables table, `inet tabby_nat`, and nothing else in the ruleset:
//!
//! ```text
//! table inet tabby_nat {
//!   set nat_v4   { type ipv4_addr; flags interval; elements = { <natOutgoing pools> } }
//!   set pools_v4 { type ipv4_addr; flags interval; elements = { <every pool> } }
//!   (nat_v6, pools_v6 alike)
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr @nat_v4 ip daddr != @pools_v4 masquerade
//!     ip6 saddr @nat_v6 ip6 daddr != @pools_v6 masquerade
//!   }
//! }
//! ```
//!
//! Every pool counts as "inside", disabled or being deleted ones too (their pods still live),
//! so pod-to-pod traffic keeps its addresses across pools; only traffic leaving every pool is
//! masqueraded. A table of its own means Tabby never edits another program's chains, and a
//! whole-table replacement is one atomic nft transaction (`add table; delete table; add …`).
//!
//! Reconciled like the routes: [`NatOutgoing::apply`] renders the desired table ([`desired`],
//! pure), compares it and the kernel's listing of our table with what it wrote last, and
//! rewrites the table when the pools changed or someone changed or deleted it; when no pool
//! needs NAT the table is removed. Call it on every IPPool change and on a timer
//! ([`run`] does both). The kernel is reached through the `nft` binary (Debian package
//! `nftables`) via the `nftables` crate's JSON schema; calls block (run it off the async
//! executor, as [`run`] does). Exiting leaves the table in place, like routes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::helper::NftablesError;
use nftables::schema::{Chain, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;
use tabby_api::v1alpha1::IPPool;

/// Tabby's table (family `inet`).
pub const TABLE: &str = "tabby_nat";
const CHAIN: &str = "postrouting";
/// `srcnat`: the standard priority of source NAT in the postrouting hook.
const SRCNAT_PRIORITY: i32 = 100;

/// The pool CIDRs the table is built from: aggregated, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatSpec {
    pub nat_v4: Vec<Ipv4Net>,
    pub pools_v4: Vec<Ipv4Net>,
    pub nat_v6: Vec<Ipv6Net>,
    pub pools_v6: Vec<Ipv6Net>,
}

impl NatSpec {
    /// No pool needs NAT: the table should not exist.
    pub fn is_empty(&self) -> bool {
        self.nat_v4.is_empty() && self.nat_v6.is_empty()
    }

    /// The masqueraded source ranges.
    pub fn masqueraded(&self) -> Vec<IpNet> {
        self.nat_v4
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(self.nat_v6.iter().map(|n| IpNet::V6(*n)))
            .collect()
    }
}

/// The desired spec from the pools, plus a problem per pool whose CIDR does not parse (left
/// out, never guessed).
pub fn desired(pools: &[IPPool]) -> (NatSpec, Vec<String>) {
    let mut problems = Vec::new();
    let (mut nat4, mut all4, mut nat6, mut all6) = (vec![], vec![], vec![], vec![]);
    for p in pools {
        let name = p.metadata.name.as_deref().unwrap_or("<unnamed>");
        let cidr = match p.spec.cidr.parse::<IpNet>() {
            Ok(c) => c.trunc(),
            Err(e) => {
                problems.push(format!(
                    "IPPool {name}: cidr {:?} is not a CIDR ({e}); left out of natOutgoing",
                    p.spec.cidr
                ));
                continue;
            }
        };
        match cidr {
            IpNet::V4(n) => {
                all4.push(n);
                if p.spec.nat_outgoing {
                    nat4.push(n);
                }
            }
            IpNet::V6(n) => {
                all6.push(n);
                if p.spec.nat_outgoing {
                    nat6.push(n);
                }
            }
        }
    }
    let spec = NatSpec {
        nat_v4: Ipv4Net::aggregate(&nat4),
        pools_v4: Ipv4Net::aggregate(&all4),
        nat_v6: Ipv6Net::aggregate(&nat6),
        pools_v6: Ipv6Net::aggregate(&all6),
    };
    (spec, problems)
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn prefix(addr: String, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(addr.into())),
        len: u32::from(len),
    }))
}

fn set(name: &'static str, ty: SetType, elems: Vec<Expression<'static>>) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        set_type: SetTypeValue::Single(ty),
        flags: Some(HashSet::from([SetFlag::Interval])),
        elem: Some(Cow::Owned(elems)),
        ..Set::default()
    }))
}

fn field(protocol: &'static str, f: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: f.into(),
        },
    )))
}

fn masquerade_rule(
    proto: &'static str,
    nat: &'static str,
    pools: &'static str,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: Cow::Owned(vec![
            Statement::Match(Match {
                left: field(proto, "saddr"),
                right: Expression::String(format!("@{nat}").into()),
                op: Operator::EQ,
            }),
            Statement::Match(Match {
                left: field(proto, "daddr"),
                right: Expression::String(format!("@{pools}").into()),
                op: Operator::NEQ,
            }),
            Statement::Masquerade(None),
        ]),
        comment: Some("tabby natOutgoing".into()),
        ..Rule::default()
    })
}

/// The transaction that makes the table exactly `spec` (atomic: it first creates and deletes
/// the table, so whatever was in it is gone, then builds it anew).
pub fn render(spec: &NatSpec) -> Batch<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.add(NfListObject::Table(table()));
    let v4 = |n: &Ipv4Net| prefix(n.network().to_string(), n.prefix_len());
    let v6 = |n: &Ipv6Net| prefix(n.network().to_string(), n.prefix_len());
    let families = [
        (
            !spec.nat_v4.is_empty(),
            "ip",
            "nat_v4",
            "pools_v4",
            SetType::Ipv4Addr,
            spec.nat_v4.iter().map(v4).collect::<Vec<_>>(),
            spec.pools_v4.iter().map(v4).collect::<Vec<_>>(),
        ),
        (
            !spec.nat_v6.is_empty(),
            "ip6",
            "nat_v6",
            "pools_v6",
            SetType::Ipv6Addr,
            spec.nat_v6.iter().map(v6).collect(),
            spec.pools_v6.iter().map(v6).collect(),
        ),
    ];
    for (wanted, _, nat, pools, ty, nat_elems, pool_elems) in families.iter().cloned() {
        if wanted {
            b.add(set(nat, ty, nat_elems));
            b.add(set(pools, ty, pool_elems));
        }
    }
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(SRCNAT_PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    for (wanted, proto, nat, pools, ..) in families {
        if wanted {
            b.add(masquerade_rule(proto, nat, pools));
        }
    }
    b
}

/// The transaction that removes the table (and does nothing when it is absent).
pub fn render_removal() -> Batch<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b
}

/// A listing without what changes on every write (handles) or says nothing about the table
/// (`metainfo`), so two listings of the same content compare equal.
pub fn normalize(listing: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "handle")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let objects = listing
        .get("nftables")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|o| o.get("metainfo").is_none())
                .map(strip)
                .collect()
        })
        .unwrap_or_default();
    Value::Array(objects)
}

/// What [`NatOutgoing::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatAction {
    /// The table was as written last time.
    Unchanged,
    /// Written for the first time by this instance.
    Created,
    /// Rewritten: the pools changed, or someone changed our table.
    Replaced,
    /// Written again: someone deleted it.
    Restored,
    /// Deleted: no pool needs NAT.
    Removed,
    /// No pool needs NAT and there is no table.
    Absent,
}

/// The outcome of one [`NatOutgoing::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatReport {
    pub action: NatAction,
    /// Source ranges masqueraded now.
    pub masqueraded: Vec<IpNet>,
    /// Pools left out, with the reason.
    pub problems: Vec<String>,
}

/// Why the table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("nft ({program}) cannot be run: {source}")]
    Missing {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Nft {
        what: &'static str,
        #[source]
        source: NftablesError,
    },
    #[error("{what}: nft said: {stderr}")]
    Failed { what: &'static str, stderr: String },
    #[error("nft printed a listing that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The owner of table `inet tabby_nat` in the caller's network namespace.
#[derive(Debug)]
pub struct NatOutgoing {
    program: PathBuf,
    /// What we wrote last, and the kernel's (normalized) listing right after.
    last: Option<(NatSpec, Value)>,
}

impl NatOutgoing {
    /// Uses `nft` from `PATH`; fails when it cannot be run.
    pub fn new() -> Result<Self, NatError> {
        Self::with_program("nft")
    }

    /// Uses the given `nft` binary.
    pub fn with_program(program: impl Into<PathBuf>) -> Result<Self, NatError> {
        let program = program.into();
        std::process::Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|source| NatError::Missing {
                program: program.display().to_string(),
                source,
            })?;
        Ok(NatOutgoing {
            program,
            last: None,
        })
    }

    fn program(&self) -> Option<&OsStr> {
        Some(self.program.as_os_str())
    }

    /// Our table as the kernel has it (normalized), or `None` when it does not exist.
    pub fn current(&self) -> Result<Option<Value>, NatError> {
        let out = std::process::Command::new(&self.program)
            .args(["-j", "list", "table", "inet", TABLE])
            .output()
            .map_err(|source| NatError::Missing {
                program: self.program.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // nft's words for a table that does not exist (ENOENT).
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NatError::Failed {
                what: "listing table inet tabby_nat",
                stderr,
            });
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(Some(normalize(&v)))
    }

    fn run(&self, batch: Batch<'static>, what: &'static str) -> Result<(), NatError> {
        let no_args: [&str; 0] = [];
        nftables::helper::apply_ruleset_with_args(
            &batch.to_nftables(),
            self.program(),
            no_args.iter(),
        )
        .map_err(|source| NatError::Nft { what, source })
    }

    /// Makes the table match `pools` (see the module comment). Blocking.
    pub fn apply(&mut self, pools: &[IPPool]) -> Result<NatReport, NatError> {
        let (spec, problems) = desired(pools);
        let current = self.current()?;
        let action = if spec.is_empty() {
            self.last = None;
            match current {
                Some(_) => {
                    self.run(render_removal(), "removing table inet tabby_nat")?;
                    NatAction::Removed
                }
                None => NatAction::Absent,
            }
        } else {
            let action = match (&current, &self.last) {
                (Some(cur), Some((s, seen))) if *s == spec && cur == seen => NatAction::Unchanged,
                (None, Some(_)) => NatAction::Restored,
                (None, None) => NatAction::Created,
                (Some(_), _) => NatAction::Replaced,
            };
            if action != NatAction::Unchanged {
                self.run(render(&spec), "writing table inet tabby_nat")?;
                let listing = self.current()?.unwrap_or(Value::Null);
                self.last = Some((spec.clone(), listing));
            }
            action
        };
        match action {
            NatAction::Unchanged | NatAction::Absent => {}
            NatAction::Restored => {
                tracing::warn!("table inet {TABLE} was deleted by someone else; restored")
            }
            _ => {
                tracing::info!(action = ?action, masqueraded = ?spec.masqueraded(), "natOutgoing table updated")
            }
        }
        Ok(NatReport {
            action,
            masqueraded: spec.masqueraded(),
            problems,
        })
    }

    /// Deletes the table (e.g. when natOutgoing is turned off for the node). Blocking.
    pub fn remove(&mut self) -> Result<(), NatError> {
        self.last = None;
        self.run(render_removal(), "removing table inet tabby_nat")
    }
}

/// Keeps the table in line with the pools: applies on every change of `pools` and every
/// `interval` (to restore a table someone deleted), until `pools`' sender is dropped. Each
/// apply runs on the blocking pool. Errors are logged and retried on the next tick.
pub async fn run(
    nat: NatOutgoing,
    mut pools: tokio::sync::watch::Receiver<Vec<IPPool>>,
    interval: Duration,
) {
    let mut nat = Some(nat);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = pools.borrow_and_update().clone();
        let Some(mut n) = nat.take() else { return };
        let joined = tokio::task::spawn_blocking(move || {
            let r = n.apply(&snapshot);
            (n, r)
        })
        .await;
        match joined {
            Ok((n, r)) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "natOutgoing: could not reconcile the nftables table");
                }
                nat = Some(n);
            }
            Err(e) => {
                tracing::error!(error = %e, "natOutgoing: the reconcile task failed; stopping");
                return;
            }
        }
        tokio::select! {
            changed = pools.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_api::v1alpha1::IPPoolSpec;

    fn pool(name: &str, cidr: &str, nat: bool) -> IPPool {
        IPPool::new(
            name,
            IPPoolSpec {
                cidr: cidr.into(),
                block_size: None,
                node_selector: None,
                disabled: false,
                nat_outgoing: nat,
                disable_bgp_export: false,
            },
        )
    }

    #[test]
    fn desired_table() {
        let cases: Vec<(&str, Vec<IPPool>, &[&str], usize)> = vec![
            ("no pools", vec![], &[], 0),
            (
                "no natOutgoing",
                vec![pool("a", "10.0.0.0/16", false)],
                &[],
                0,
            ),
            (
                "one of two pools",
                vec![
                    pool("a", "10.0.0.0/16", true),
                    pool("b", "10.1.0.0/16", false),
                ],
                &["10.0.0.0/16"],
                0,
            ),
            (
                "dual-stack, adjacent pools aggregated",
                vec![
                    pool("a", "10.0.0.0/17", true),
                    pool("b", "10.0.128.0/17", true),
                    pool("c", "fd00:10::/64", true),
                ],
                &["10.0.0.0/16", "fd00:10::/64"],
                0,
            ),
            (
                "a bad CIDR is left out and reported",
                vec![
                    pool("bad", "10.0.0.300/24", true),
                    pool("a", "10.2.0.0/24", true),
                ],
                &["10.2.0.0/24"],
                1,
            ),
        ];
        for (name, pools, want, problems) in cases {
            let (spec, p) = desired(&pools);
            let got: Vec<String> = spec.masqueraded().iter().map(|n| n.to_string()).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(p.len(), problems, "{name}: {p:?}");
            assert_eq!(spec.is_empty(), want.is_empty(), "{name}");
        }
    }

    #[test]
    fn every_pool_is_inside() {
        let (spec, _) = desired(&[
            pool("a", "10.0.0.0/16", true),
            pool("b", "10.9.0.0/16", false),
        ]);
        assert_eq!(
            spec.pools_v4,
            vec![
                "10.0.0.0/16".parse::<Ipv4Net>().unwrap(),
                "10.9.0.0/16".parse().unwrap()
            ]
        );
        assert!(spec.pools_v6.is_empty() && spec.nat_v6.is_empty());
    }

    #[test]
    fn render_is_an_atomic_replacement_of_our_table_only() {
        let (spec, _) = desired(&[pool("a", "10.0.0.0/16", true), pool("c", "fd00::/64", true)]);
        let json = serde_json::to_value(render(&spec).to_nftables()).unwrap();
        let objs = json["nftables"].as_array().unwrap();
        // add, delete, add table; 4 sets; chain; 2 rules.
        assert_eq!(objs.len(), 10, "{json:#}");
        assert_eq!(objs[0]["add"]["table"]["name"], TABLE);
        assert_eq!(objs[1]["delete"]["table"]["name"], TABLE);
        for o in objs {
            let inner = o.as_object().unwrap().values().next().unwrap();
            let obj = inner.as_object().unwrap().values().next().unwrap();
            let t = obj.get("table").or_else(|| obj.get("name")).unwrap();
            assert_eq!(t, TABLE, "an object outside our table: {o}");
            assert_eq!(obj["family"], "inet");
        }
        let rule = &objs[8]["add"]["rule"];
        assert_eq!(rule["expr"][0]["match"]["right"], "@nat_v4");
        assert_eq!(rule["expr"][1]["match"]["op"], "!=");
        assert!(rule["expr"][2].get("masquerade").is_some(), "{rule}");
    }

    #[test]
    fn normalize_drops_handles_and_metainfo() {
        let a = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "tabby_nat", "handle": 7}},
        ]});
        let b = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.9"}},
            {"table": {"family": "inet", "name": "tabby_nat", "handle": 9}},
        ]});
        assert_eq!(normalize(&a), normalize(&b));
        assert_eq!(normalize(&a).as_array().unwrap().len(), 1);
    }
}
