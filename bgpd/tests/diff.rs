//! Reload diffs: each edit to the file turns into exactly the operations it needs, and global
//! changes are refused.

use std::path::Path;

use tabby_bgpd::config::Config;
use tabby_bgpd::diff::{Op, diff, initial};

const BASE: &str = r#"
router_id = "192.0.2.1"
asn = 65001
listen = ["127.0.0.1"]

[[peers]]
address = "127.0.0.2"
remote_asn = 65002
import_policy = "in"
export_policy = "out"

[[peers]]
address = "127.0.0.3"
remote_asn = 65001

[[originate]]
prefix = "10.1.0.0/24"

[[originate]]
prefix = "10.2.0.0/24"

[[policies]]
name = "in"
default = "accept"

[[policies]]
name = "out"
default = "accept"
"#;

fn cfg(text: &str) -> Config {
    Config::parse(text, Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The diff from BASE to BASE with `edits` applied, shown as `Op` display strings.
fn ops_after(edits: &[(&str, &str)]) -> Vec<String> {
    let mut text = BASE.to_string();
    for (find, replace) in edits {
        assert!(text.contains(find), "BASE lacks {find:?}");
        text = text.replacen(find, replace, 1);
    }
    let (old, new) = (cfg(BASE), cfg(&text));
    let ops = diff(&old, &new).unwrap_or_else(|e| panic!("{e}"));
    // Applying the ops to the old config must give the new one.
    let mut running = old.clone();
    for op in &ops {
        op.apply_to(&mut running);
    }
    assert_eq!(running, new, "ops {ops:?} do not turn old into new");
    ops.iter().map(|o| o.to_string()).collect()
}

/// (name, edits to BASE as (find, replace), the operations expected).
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn diff_table() {
    let cases: &[Case] = &[
        ("no change", &[], &[]),
        (
            "whitespace and key order do not matter",
            &[(
                "remote_asn = 65002\nimport_policy = \"in\"",
                "import_policy = \"in\"\nremote_asn   =   65002",
            )],
            &[],
        ),
        (
            "one peer's hold time: only that peer",
            &[(
                "remote_asn = 65001\n",
                "remote_asn = 65001\nhold_time = 30\n",
            )],
            &["update peer 127.0.0.3"],
        ),
        (
            "add a peer",
            &[(
                "[[originate]]\nprefix = \"10.1",
                "[[peers]]\naddress = \"127.0.0.4\"\nremote_asn = 65004\n\n[[originate]]\nprefix = \"10.1",
            )],
            &["add peer 127.0.0.4"],
        ),
        (
            "remove a peer",
            &[(
                "[[peers]]\naddress = \"127.0.0.3\"\nremote_asn = 65001\n",
                "",
            )],
            &["remove peer 127.0.0.3"],
        ),
        (
            "withdraw one prefix, originate another",
            &[("10.2.0.0/24", "10.3.0.0/24")],
            &["withdraw 10.2.0.0/24", "originate 10.3.0.0/24"],
        ),
        (
            "attributes of an originated prefix change: re-originate it",
            &[(
                "prefix = \"10.1.0.0/24\"",
                "prefix = \"10.1.0.0/24\"\nmed = 5",
            )],
            &["originate 10.1.0.0/24"],
        ),
        (
            "communities added: re-originate",
            &[(
                "prefix = \"10.1.0.0/24\"",
                "prefix = \"10.1.0.0/24\"\ncommunities = [\"1:1\", \"1:2\"]",
            )],
            &["originate 10.1.0.0/24"],
        ),
        (
            "policy body changes: set policy only, the peer referring to it is unchanged",
            &[(
                "name = \"in\"\ndefault = \"accept\"",
                "name = \"in\"\ndefault = \"reject\"",
            )],
            &["set policy \"in\""],
        ),
        (
            "peer switches to a new policy: policy first, then the peer",
            &[
                ("import_policy = \"in\"", "import_policy = \"in2\""),
                (
                    "name = \"in\"\ndefault = \"accept\"",
                    "name = \"in\"\ndefault = \"accept\"\n\n[[policies]]\nname = \"in2\"\ndefault = \"accept\"",
                ),
            ],
            &["set policy \"in2\"", "update peer 127.0.0.2"],
        ),
        (
            "peer drops a policy that goes away: peer first, then remove the policy",
            &[
                ("import_policy = \"in\"\n", ""),
                ("[[policies]]\nname = \"in\"\ndefault = \"accept\"\n", ""),
            ],
            &["update peer 127.0.0.2", "remove policy \"in\""],
        ),
        (
            "replace one peer by another at once",
            &[("address = \"127.0.0.3\"", "address = \"127.0.0.5\"")],
            &["remove peer 127.0.0.3", "add peer 127.0.0.5"],
        ),
    ];
    for (name, edits, want) in cases {
        let got = ops_after(edits);
        assert_eq!(got, *want, "case: {name}");
    }
}

#[test]
fn reordered_communities_only_is_no_change() {
    let a = BASE.replacen(
        "prefix = \"10.1.0.0/24\"",
        "prefix = \"10.1.0.0/24\"\ncommunities = [\"1:1\", \"1:2\"]",
        1,
    );
    let b = BASE.replacen(
        "prefix = \"10.1.0.0/24\"",
        "prefix = \"10.1.0.0/24\"\ncommunities = [\"1:2\", \"1:1\", \"1:2\"]",
        1,
    );
    assert_eq!(diff(&cfg(&a), &cfg(&b)).unwrap(), vec![]);
}

#[test]
fn global_changes_are_refused_with_every_field_named() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "router_id = \"192.0.2.1\"",
            "router_id = \"192.0.2.9\"",
            &["router_id"],
        ),
        ("asn = 65001\n", "asn = 65009\n", &["asn"]),
        (
            "listen = [\"127.0.0.1\"]",
            "listen = [\"127.0.0.9\"]",
            &["listen/listen_port"],
        ),
        (
            "listen = [\"127.0.0.1\"]",
            "listen = [\"127.0.0.1\"]\nlisten_port = 1790",
            &["listen/listen_port"],
        ),
        (
            "asn = 65001\n",
            "asn = 65001\ncluster_id = \"1.1.1.1\"\n",
            &["cluster_id"],
        ),
        (
            "asn = 65001\n",
            "asn = 65001\nmax_paths = 8\n",
            &["max_paths"],
        ),
        (
            "name = \"out\"\ndefault = \"accept\"\n",
            "name = \"out\"\ndefault = \"accept\"\n\n[graceful_restart]\n",
            &["graceful_restart"],
        ),
    ];
    for (find, replace, fields) in cases {
        let new = cfg(&BASE.replacen(find, replace, 1));
        let err = diff(&cfg(BASE), &new).unwrap_err();
        assert_eq!(err.fields, *fields, "{replace}");
        let msg = err.to_string();
        assert!(msg.contains("running config is kept"), "{msg}");
    }
    // Both at once: both named.
    let new = cfg(
        &BASE
            .replacen("asn = 65001\n", "asn = 65009\n", 1)
            .replacen("192.0.2.1", "192.0.2.9", 1),
    );
    let err = diff(&cfg(BASE), &new).unwrap_err();
    assert_eq!(err.fields, ["router_id", "asn"]);
}

#[test]
fn initial_ops_build_the_config_from_nothing() {
    let c = cfg(BASE);
    let ops = initial(&c);
    let shown: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        shown,
        [
            "set policy \"in\"",
            "set policy \"out\"",
            "add peer 127.0.0.2",
            "add peer 127.0.0.3",
            "originate 10.1.0.0/24",
            "originate 10.2.0.0/24",
        ]
    );
    let mut empty = c.clone();
    empty.peers.clear();
    empty.originate.clear();
    empty.policies.clear();
    for op in &ops {
        op.apply_to(&mut empty);
    }
    assert_eq!(empty, c);
    assert!(matches!(ops[0], Op::SetPolicy(_)));
}

#[test]
fn a_changed_password_file_updates_only_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "one\n").unwrap();
    let text = BASE.replacen(
        "remote_asn = 65001\n",
        "remote_asn = 65001\npassword_file = \"pw\"\n",
        1,
    );
    let path = dir.path().join("bgpd.toml");
    std::fs::write(&path, &text).unwrap();
    let old = Config::load(&path).unwrap();
    assert_eq!(diff(&old, &Config::load(&path).unwrap()).unwrap(), vec![]);
    // Same file, new key: the reload must notice (RFC 2385 keys change on both ends).
    std::fs::write(&pw, "two\n").unwrap();
    let new = Config::load(&path).unwrap();
    let ops: Vec<String> = diff(&old, &new)
        .unwrap()
        .iter()
        .map(|o| o.to_string())
        .collect();
    assert_eq!(ops, ["update peer 127.0.0.3"]);
}
