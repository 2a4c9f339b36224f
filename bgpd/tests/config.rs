//! Config validation: every rule names the field that broke it, and good files load to the
//! values written (defaults where absent).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use tabby_bgpd::config::{AfiSafi, Config, ConfigError, NextHopMode, parse_prefix};

const BASE: &str = r#"
router_id = "192.0.2.1"
asn = 65001
listen = ["127.0.0.1"]
listen_port = 1179

[graceful_restart]
restart_time = 90

[[peers]]
address = "127.0.0.2"
remote_asn = 65002
import_policy = "all"
export_policy = "all"

[[peers]]
address = "::1"
remote_asn = 65001
families = ["ipv4-unicast", "ipv6-unicast"]
extended_next_hop = true
route_reflector_client = true

[[originate]]
prefix = "10.1.0.0/24"
communities = ["65000:2", "65000:1"]

[[policies]]
name = "all"
default = "accept"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/nonexistent"))
}

/// The field paths of the validation errors of `text`, or the parse error text.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(v)) => v.iter().map(|e| e.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn base_config_loads_with_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.router_id, Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(c.asn, 65001);
    assert_eq!(c.listen, vec!["127.0.0.1:1179".parse().unwrap()]);
    assert_eq!(c.max_paths, 1);
    let gr = c.graceful_restart.unwrap();
    assert_eq!((gr.restart_time, gr.stale_routes_time), (90, 360));
    let p = &c.peers[&"127.0.0.2".parse::<IpAddr>().unwrap()];
    assert_eq!(p.port, 179);
    assert_eq!(p.hold_time, 90);
    assert_eq!(p.connect_retry, 30);
    assert!(
        p.graceful_restart,
        "defaults to on when [graceful_restart] exists"
    );
    assert_eq!(
        p.families.iter().copied().collect::<Vec<_>>(),
        [AfiSafi::Ipv4Unicast]
    );
    assert_eq!(p.next_hop_mode, NextHopMode::Auto);
    assert!(!p.is_ibgp(c.asn));
    let v6 = &c.peers[&"::1".parse::<IpAddr>().unwrap()];
    assert!(v6.is_ibgp(c.asn) && v6.route_reflector_client && v6.extended_next_hop);
    let o = &c.originate[&parse_prefix("10.1.0.0/24").unwrap()];
    // Sorted: order carries no meaning (RFC 1997 §4).
    let shown: Vec<String> = o.communities.iter().map(|c| c.to_string()).collect();
    assert_eq!(shown, ["65000:1", "65000:2"]);
}

/// (what to change in BASE, the error that must come out, a word it must contain).
const CASES: &[(&str, &str, &str, &str)] = &[
    // (find, replace, expected field path prefix, expected word in the reason)
    (
        "router_id = \"192.0.2.1\"",
        "router_id = \"0.0.0.0\"",
        "router_id",
        "0.0.0.0",
    ),
    ("asn = 65001\nlisten", "asn = 0\nlisten", "asn", "RFC 7607"),
    (
        "asn = 65001\nlisten",
        "asn = 23456\nlisten",
        "asn",
        "AS_TRANS",
    ),
    (
        "listen_port = 1179",
        "listen_port = 0",
        "listen_port",
        "1..=65535",
    ),
    (
        "listen = [\"127.0.0.1\"]",
        "listen = [\"127.0.0.1\", \"127.0.0.1\"]",
        "listen[1]",
        "twice",
    ),
    (
        "restart_time = 90",
        "restart_time = 5000",
        "graceful_restart.restart_time",
        "4095",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nhold_time = 2\n",
        "peers[0].hold_time",
        "must be 0 or ≥ 3",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nkeepalive = 90\n",
        "peers[0].keepalive",
        "less than hold_time",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nhold_time = 0\nkeepalive = 10\n",
        "peers[0].keepalive",
        "hold_time is 0",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nport = 0\n",
        "peers[0].port",
        "1..=65535",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nsource = \"::2\"\n",
        "peers[0].source",
        "address family",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\npassword = \"\"\n",
        "peers[0].password",
        "empty",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\npassword = \"x\"\npassword_file = \"pw\"\n",
        "peers[0].password_file",
        "not both",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\npassword_file = \"missing-pw\"\n",
        "peers[0].password_file",
        "cannot read",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nttl_security = 255\n",
        "peers[0].ttl_security",
        "1..=254",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nconnect_retry = 0\n",
        "peers[0].connect_retry",
        "≥ 1",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\ndelay_open = 0\n",
        "peers[0].delay_open",
        "≥ 1",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nfamilies = []\n",
        "peers[0].families",
        "at least one",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nfamilies = [\"ipv4-unicast\", \"ipv4-unicast\"]\n",
        "peers[0].families",
        "twice",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nextended_next_hop = true\n",
        "peers[0].extended_next_hop",
        "IPv6 sessions",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nadd_path = { receive = [\"ipv6-unicast\"] }\n",
        "peers[0].add_path.receive[0]",
        "not in the peer's families",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nadd_path = { receive = [\"ipv4-unicast\"], send = [\"ipv4-unicast\", \"ipv6-unicast\"] }\n",
        "peers[0].add_path.send[1]",
        "not in the peer's families",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nadd_path = { sent = [\"ipv4-unicast\"] }\n",
        // deny_unknown_fields: a misspelt key is refused, not ignored.
        "TOML parse error",
        "unknown field `sent`, expected `receive` or `send`",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nroute_reflector_client = true\n",
        "peers[0].route_reflector_client",
        "iBGP",
    ),
    (
        "import_policy = \"all\"",
        "import_policy = \"nope\"",
        "peers[0].import_policy",
        "no policy named \"nope\"",
    ),
    (
        "export_policy = \"all\"",
        "export_policy = \"nope\"",
        "peers[0].export_policy",
        "no policy named",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nmax_prefix = { limit = 0 }\n",
        "peers[0].max_prefix.limit",
        "≥ 1",
    ),
    (
        "remote_asn = 65002\n",
        "remote_asn = 65002\nmax_prefix = { limit = 10, restart_after = 0 }\n",
        "peers[0].max_prefix.restart_after",
        "≥ 1",
    ),
    (
        "address = \"::1\"\nremote_asn = 65001",
        "address = \"::1\"\nremote_asn = 23456",
        "peers[1].remote_asn",
        "AS_TRANS",
    ),
    (
        "address = \"::1\"",
        "address = \"127.0.0.2\"",
        "peers[1].address",
        "already configured in peers[0]",
    ),
    (
        "address = \"::1\"",
        "address = \"224.0.0.5\"",
        "peers[1].address",
        "unicast",
    ),
    (
        "route_reflector_client = true",
        "route_reflector_client = true\npassive = true",
        "peers[1].passive",
        "no listen address accepts connections from ::1",
    ),
    (
        "prefix = \"10.1.0.0/24\"",
        "prefix = \"10.1.0.1/24\"",
        "originate[0].prefix",
        "host bits",
    ),
    (
        "prefix = \"10.1.0.0/24\"",
        "prefix = \"10.1.0.0/33\"",
        "originate[0].prefix",
        "33",
    ),
    (
        "prefix = \"10.1.0.0/24\"",
        "prefix = \"banana\"",
        "originate[0].prefix",
        "banana",
    ),
    (
        "communities = [\"65000:2\", \"65000:1\"]",
        "communities = [\"65000:2\", \"70000:1\"]",
        "originate[0].communities[1]",
        "16-bit",
    ),
    (
        "communities = [\"65000:2\", \"65000:1\"]",
        "large_communities = [\"1:2\"]",
        "originate[0].large_communities[0]",
        "GLOBAL:LOCAL1:LOCAL2",
    ),
    (
        "communities = [\"65000:2\", \"65000:1\"]",
        "next_hop = \"2001:db8::1\"",
        "originate[0].next_hop",
        "address family",
    ),
    (
        "[[policies]]\nname = \"all\"\ndefault = \"accept\"",
        "[[policies]]\nname = \"all\"\ndefault = \"accept\"\n[[policies]]\nname = \"all\"",
        "policies[1].name",
        "duplicate",
    ),
    (
        "[[policies]]\nname = \"all\"\ndefault = \"accept\"",
        "[[policies]]\nname = \"all\"\ndefault = \"accept\"\n[[policies.rules]]\nthen = \"accept\"\nmatch = { prefix = [{ prefix = \"10.0.0.1/8\" }] }",
        "policies[0]",
        "host bits",
    ),
];

#[test]
fn each_invalid_value_is_named_by_its_field_path() {
    for (find, replace, path, word) in CASES {
        assert!(BASE.contains(find), "case {path}: BASE lacks {find:?}");
        let text = BASE.replacen(find, replace, 1);
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with(path) && e.contains(word)),
            "case {path} / {word}: got {errs:#?}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = BASE
        .replacen("router_id = \"192.0.2.1\"", "router_id = \"0.0.0.0\"", 1)
        .replacen(
            "remote_asn = 65002\n",
            "remote_asn = 65002\nhold_time = 1\n",
            1,
        )
        .replacen("prefix = \"10.1.0.0/24\"", "prefix = \"10.1.0.1/24\"", 1);
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.starts_with("3 error(s) in the config:"), "{msg}");
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_line() {
    let text = BASE.replacen(
        "remote_asn = 65002\n",
        "remote_asn = 65002\nhold_tme = 3\n",
        1,
    );
    let e = errors(&text).join("\n");
    assert!(e.contains("hold_tme") && e.contains("line"), "{e}");

    let text = BASE.replacen("remote_asn = 65002\n", "remote_asn = \"65002\"\n", 1);
    let e = errors(&text).join("\n");
    assert!(e.contains("remote_asn") || e.contains("line 13"), "{e}");

    let e = errors("asn = 1\n").join("\n");
    assert!(e.contains("router_id"), "missing field is named: {e}");
}

#[test]
fn gr_on_a_peer_needs_the_global_section() {
    let text = BASE
        .replacen("[graceful_restart]\nrestart_time = 90\n", "", 1)
        .replacen(
            "remote_asn = 65002\n",
            "remote_asn = 65002\ngraceful_restart = true\n",
            1,
        );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("peers[0].graceful_restart")),
        "{errs:#?}"
    );
    // Without the section and without the per-peer key, GR is simply off.
    let text = BASE.replacen("[graceful_restart]\nrestart_time = 90\n", "", 1);
    let c = parse(&text).unwrap();
    assert!(c.peers.values().all(|p| !p.graceful_restart));
}

#[test]
fn password_file_is_read_relative_to_the_config_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let text = BASE.replacen(
        "remote_asn = 65002\n",
        "remote_asn = 65002\npassword_file = \"pw\"\n",
        1,
    );
    let path = dir.path().join("bgpd.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    let p = &c.peers[&"127.0.0.2".parse::<IpAddr>().unwrap()];
    assert_eq!(p.md5_password.as_ref().unwrap().expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bgpd.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!c.peers.is_empty() && !c.policies.is_empty() && !c.originate.is_empty());
}

/// RFC 8654 extended messages: on by default (the speaker's default), a top-level default for
/// every peer, and a per-peer key that wins; both reach the speaker's OPEN.
#[test]
fn extended_message_defaults_to_the_top_level_key_and_a_peer_can_override() {
    let v4: IpAddr = "127.0.0.2".parse().unwrap();
    let v6: IpAddr = "::1".parse().unwrap();
    let c = parse(BASE).unwrap();
    assert!(c.peers[&v4].extended_message && c.peers[&v6].extended_message);

    let off = format!("extended_message = false\n{BASE}");
    let c = parse(&off).unwrap();
    assert!(!c.peers[&v4].extended_message && !c.peers[&v6].extended_message);

    let one_on = off.replacen(
        "remote_asn = 65002\n",
        "remote_asn = 65002\nextended_message = true\n",
        1,
    );
    let c = parse(&one_on).unwrap();
    assert!(c.peers[&v4].extended_message, "the peer's key wins");
    assert!(
        !c.peers[&v6].extended_message,
        "the others keep the top-level one"
    );

    let speaker = tabby_bgpd::convert::speaker_config(&c, false);
    let open = |addr: &IpAddr| {
        tabby_bgpd::convert::peer_config(&c.peers[addr])
            .local_config(&speaker)
            .extended_message
    };
    assert!(open(&v4) && !open(&v6), "what the OPEN offers");
}

#[test]
fn extended_message_wrong_types_name_the_key_and_line() {
    let text = BASE.replacen(
        "remote_asn = 65002\n",
        "remote_asn = 65002\nextended_message = \"yes\"\n",
        1,
    );
    let e = errors(&text).join("\n");
    assert!(
        e.contains("extended_message") && e.contains("line"),
        "the peer key is named: {e}"
    );
    let e = errors(&format!("extended_message = 1\n{BASE}")).join("\n");
    assert!(
        e.contains("extended_message") && e.contains("line 1"),
        "the top-level key is named: {e}"
    );
}
