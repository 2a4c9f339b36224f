//! Convergence through one speaker, bgperf-style, over the in-memory transport: P injector
//! sessions each announce M unique IPv4 /24s to the speaker; a monitor session receives what
//! it re-advertises. Measures first UPDATE sent → monitor holds all P×M. The default run is
//! small (a correctness check for batching, update groups and flow control); set
//! `TABBY_SCALE_PEERS` / `TABBY_SCALE_PREFIXES` for the full figure (10 × 100,000).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tabby_bgp::fsm::FsmConfig;
use tabby_bgp::negotiate::LocalConfig;
use tabby_bgp::policy::{PolicyConfig, Verdict};
use tabby_bgp::session::{
    Command, SessionConfig, SessionEvent, SessionEventKind, incoming_channel, spawn,
};
use tabby_bgp::speaker::{MemoryNetwork, PeerConfig, Speaker, SpeakerConfig, Transport};
use tabby_bgp::wire::{
    AsPath, Asn, AttributeValue, DecodeContext, Ipv4Nlri, Ipv4Prefix, MAX_MESSAGE_LEN, Message,
    Origin, Update,
};
use tokio::sync::mpsc;

const TARGET: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const TARGET_AS: u32 = 64512;
const MONITOR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
const MONITOR_AS: u32 = 64999;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn injector_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// A raw session at `me` toward the target, through the in-memory network.
fn raw_session(
    net: &MemoryNetwork,
    me: Ipv4Addr,
    asn: u32,
    events: mpsc::Sender<SessionEvent>,
) -> mpsc::Sender<Command> {
    let t: Arc<dyn Transport> = net.transport(IpAddr::V4(me));
    let to_target = PeerConfig::new(IpAddr::V4(TARGET), TARGET_AS);
    let (in_tx, in_rx) = incoming_channel();
    t.register(&to_target, in_tx).unwrap();
    let local = LocalConfig::new(Asn(asn), me, Some(Asn(TARGET_AS)));
    let h = spawn(
        SessionConfig {
            peer: IpAddr::V4(TARGET),
            local,
            fsm: FsmConfig::default(),
        },
        t.connector(&to_target),
        in_rx,
        events,
    );
    // The transport must outlive the session's connector use; it is only a registry handle.
    std::mem::forget(t);
    h.commands
}

/// Injector `i`'s table, packed into full UPDATEs and encoded.
fn table(i: usize, m: usize, asn: u32, nh: Ipv4Addr) -> (bytes::Bytes, u32) {
    let cx = DecodeContext {
        four_octet_as: true,
        ..DecodeContext::default()
    };
    let attrs = vec![
        AttributeValue::Origin(Origin::Igp).into(),
        AttributeValue::AsPath(AsPath::sequence([asn])).into(),
        AttributeValue::NextHop(nh).into(),
    ];
    let base = 16 + 2 + 2 + 2 + 4 + 7 + 3; // header, lengths and the three attributes
    let per = (MAX_MESSAGE_LEN - base - 16) / 4;
    let mut out = BytesMut::new();
    let mut n = 0;
    let first = (16u32 << 24) + (i * m) as u32 * 256;
    let prefixes: Vec<Ipv4Nlri> = (0..m as u32)
        .map(|k| Ipv4Nlri::new(Ipv4Prefix::new(Ipv4Addr::from(first + k * 256), 24).unwrap()))
        .collect();
    for chunk in prefixes.chunks(per) {
        let u = Update {
            attributes: attrs.clone(),
            nlri: chunk.to_vec(),
            ..Update::default()
        };
        Message::Update(u).encode(&cx, &mut out).unwrap();
        n += 1;
    }
    (out.freeze(), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injectors_converge_into_the_monitor() {
    let peers = env("TABBY_SCALE_PEERS", 4);
    let m = env("TABBY_SCALE_PREFIXES", 5_000);
    let net = MemoryNetwork::new();
    let target = Speaker::start_with_transport(
        SpeakerConfig::new(TARGET_AS, TARGET),
        net.transport(IpAddr::V4(TARGET)),
    )
    .unwrap();
    target
        .set_policy(PolicyConfig {
            name: "all".into(),
            rules: Vec::new(),
            default: Verdict::Accept,
        })
        .await
        .unwrap();
    let mut mon_cfg = PeerConfig::new(IpAddr::V4(MONITOR), MONITOR_AS);
    mon_cfg.export_policy = Some("all".into());
    target.add_peer(mon_cfg).await.unwrap();
    let (mon_tx, mut mon_rx) = mpsc::channel(1024);
    let _monitor = raw_session(&net, MONITOR, MONITOR_AS, mon_tx);

    let (inj_tx, mut inj_rx) = mpsc::channel(1024);
    let mut injectors = Vec::new();
    for i in 0..peers {
        let me = injector_addr(i);
        let asn = 65001 + i as u32;
        let mut c = PeerConfig::new(IpAddr::V4(me), asn);
        c.import_policy = Some("all".into());
        c.export_policy = Some("all".into());
        target.add_peer(c).await.unwrap();
        injectors.push((
            raw_session(&net, me, asn, inj_tx.clone()),
            table(i, m, asn, me),
        ));
    }
    // Everyone up (the monitor gets our End-of-RIB on an empty table first).
    let mut up = 0;
    while up < peers {
        let e = tokio::time::timeout(Duration::from_secs(30), inj_rx.recv())
            .await
            .expect("injectors establish")
            .unwrap();
        if matches!(e.kind, SessionEventKind::Established(_)) {
            up += 1;
        }
    }
    tokio::spawn(async move { while inj_rx.recv().await.is_some() {} });

    // Counts the (empty) Adj-RIB-Outs once; from here on they are kept incrementally.
    assert!(
        target
            .metrics()
            .await
            .unwrap()
            .peers
            .iter()
            .all(|p| p.prefixes_advertised == 0)
    );
    let start = Instant::now();
    for (tx, (bytes, messages)) in &injectors {
        tx.send(Command::SendEncoded {
            bytes: bytes.clone(),
            messages: *messages,
        })
        .await
        .unwrap();
    }
    let want = peers * m;
    let mut held: HashSet<Ipv4Prefix> = HashSet::with_capacity(want);
    let mut updates = 0u64;
    while held.len() < want {
        let e = tokio::time::timeout(Duration::from_secs(120), mon_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("monitor holds {} of {want}", held.len()))
            .unwrap();
        if let SessionEventKind::Update(u) = e.kind {
            updates += 1;
            for w in &u.withdrawn {
                held.remove(&w.prefix);
            }
            for n in &u.nlri {
                held.insert(n.prefix);
            }
        }
    }
    let elapsed = start.elapsed();
    let metrics = target.metrics().await.unwrap();
    eprintln!(
        "{peers} × {m} prefixes: {:.3} s, {updates} UPDATEs to the monitor, {} batches, {:.3} s in the loop",
        elapsed.as_secs_f64(),
        metrics.update_batches,
        metrics.update_processing.as_secs_f64()
    );
    assert_eq!(metrics.ipv4_prefixes, want);
    // The monitor is sent everything; each injector everything but its own routes (the AS
    // loop check on export keeps them back).
    for p in &metrics.peers {
        let expect = if p.address == IpAddr::V4(MONITOR) {
            want
        } else {
            want - m
        };
        assert_eq!(p.prefixes_advertised as usize, expect, "{}", p.address);
    }
    target.shutdown().await.unwrap();
}
