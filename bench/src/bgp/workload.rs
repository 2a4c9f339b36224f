//! What the injectors announce and what the monitor must end up holding: prefix numbering, AS
//! paths per mode, and the UPDATEs packed and encoded ahead of time.
//!
//! Pure: no sockets, no clock. The session code sends the bytes built here; the monitor's
//! [`super::tally::Tally`] uses [`Workload::prefix_index`] and [`Workload::is_final_path`].

use std::net::Ipv4Addr;

use bytes::BytesMut;
use tabby_bgp::wire::{
    AsPath, AttributeValue, DecodeContext, EncodeError, Ipv4Nlri, Ipv4Prefix, MAX_MESSAGE_LEN,
    Message, Origin, Update,
};

/// The injectors' prefixes start at 16.0.0.0 and are consecutive /24s; 16.0.0.0/4 holds 2^20 of
/// them, and the cap below keeps every prefix clear of 10/8 (the lab links) and 127/8.
pub const PREFIX_BASE: Ipv4Addr = Ipv4Addr::new(16, 0, 0, 0);
/// Largest number of distinct prefixes a run may ask for (16.0.0.0 – 79.255.255.0).
pub const MAX_DISTINCT_PREFIXES: u64 = 1 << 22;
/// Injector `i` is AS `FIRST_INJECTOR_AS + i`.
pub const FIRST_INJECTOR_AS: u32 = 65001;
/// Largest injector count: the injectors' ASes (65001..=65099) stay below the monitor's (65100)
/// and their addresses inside one /24.
pub const MAX_PEERS: usize = 99;
/// Batches handed to one `write_all`: whole messages up to this many octets, so a KEEPALIVE from
/// another thread can be written between batches without splitting a message.
pub const BATCH_LEN: usize = 256 * 1024;

/// bgperf's two workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every injector announces its own M prefixes: the monitor must hold P×M.
    Unique,
    /// Every injector announces the same M prefixes, injector `i` with an AS path of `i + 1`
    /// hops: the monitor must hold M, each with the shortest path (injector 0's) — best-path work.
    Same,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("--peers must be between 1 and {MAX_PEERS}, got {0}")]
    Peers(usize),
    #[error("--prefixes must be at least 1")]
    NoPrefixes,
    #[error(
        "{distinct} distinct prefixes requested; at most {MAX_DISTINCT_PREFIXES} fit in the benchmark's address range"
    )]
    TooManyPrefixes { distinct: u64 },
    #[error("encoding the UPDATEs of injector {injector}: {source}")]
    Encode {
        injector: usize,
        #[source]
        source: EncodeError,
    },
}

/// One benchmark load: P injectors × M prefixes in a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    mode: Mode,
    peers: usize,
    prefixes: u32,
}

impl Workload {
    pub fn new(mode: Mode, peers: usize, prefixes: u32) -> Result<Workload, WorkloadError> {
        if peers == 0 || peers > MAX_PEERS {
            return Err(WorkloadError::Peers(peers));
        }
        if prefixes == 0 {
            return Err(WorkloadError::NoPrefixes);
        }
        let w = Workload {
            mode,
            peers,
            prefixes,
        };
        if w.distinct() > MAX_DISTINCT_PREFIXES {
            return Err(WorkloadError::TooManyPrefixes {
                distinct: w.distinct(),
            });
        }
        Ok(w)
    }

    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Distinct prefixes the monitor must end up holding.
    pub fn distinct(&self) -> u64 {
        match self.mode {
            Mode::Unique => self.peers as u64 * u64::from(self.prefixes),
            Mode::Same => u64::from(self.prefixes),
        }
    }

    /// Paths the target receives in total (P×M in both modes).
    pub fn paths(&self) -> u64 {
        self.peers as u64 * u64::from(self.prefixes)
    }

    pub fn injector_as(injector: usize) -> u32 {
        FIRST_INJECTOR_AS + injector as u32
    }

    /// The `n`-th prefix of the benchmark's range.
    fn prefix(n: u64) -> Ipv4Prefix {
        // n < MAX_DISTINCT_PREFIXES (checked in `new`), so this neither overflows nor wraps.
        let bits = u32::from(PREFIX_BASE) + ((n as u32) << 8);
        // A /24 built from a value whose low octet is zero always has no host bits.
        Ipv4Prefix::new_masked(Ipv4Addr::from(bits), 24).unwrap_or_else(|_| unreachable!())
    }

    /// The prefixes injector `injector` announces, in order.
    pub fn prefixes_of(&self, injector: usize) -> impl Iterator<Item = Ipv4Prefix> + use<> {
        let first = match self.mode {
            Mode::Unique => injector as u64 * u64::from(self.prefixes),
            Mode::Same => 0,
        };
        (first..first + u64::from(self.prefixes)).map(Self::prefix)
    }

    /// Where `prefix` sits in the monitor's table, or `None` if no injector announces it.
    pub fn prefix_index(&self, prefix: &Ipv4Prefix) -> Option<usize> {
        if prefix.len() != 24 {
            return None;
        }
        let offset = prefix.bits().checked_sub(u32::from(PREFIX_BASE))? >> 8;
        (u64::from(offset) < self.distinct()).then_some(offset as usize)
    }

    /// The AS path injector `injector` announces: its own AS, `i + 1` times in `same` mode.
    pub fn as_path_of(&self, injector: usize) -> AsPath {
        let asn = Self::injector_as(injector);
        let hops = match self.mode {
            Mode::Unique => 1,
            Mode::Same => injector + 1,
        };
        AsPath::sequence(std::iter::repeat_n(asn, hops))
    }

    /// Whether a route the monitor received with `path` is the one it must end with. In `same`
    /// mode that is injector 0's (the shortest); in `unique` mode any path of an injector is.
    pub fn is_final_path(&self, path: &AsPath) -> bool {
        match self.mode {
            Mode::Unique => true,
            Mode::Same => {
                let asns: Vec<u32> = path
                    .segments
                    .iter()
                    .flat_map(|s| s.asns.iter().map(|a| a.0))
                    .collect();
                // Target AS then injector 0's AS exactly once.
                asns.len() == 2 && asns[1] == FIRST_INJECTOR_AS
            }
        }
    }

    /// All of injector `injector`'s UPDATEs, encoded for a session with `cx` and `next_hop`,
    /// packed as many /24s per message as fit in 4096 octets, grouped in batches of whole
    /// messages of at most [`BATCH_LEN`] octets.
    pub fn encode_injector(
        &self,
        injector: usize,
        next_hop: Ipv4Addr,
        cx: &DecodeContext,
    ) -> Result<Encoded, WorkloadError> {
        let err = |source| WorkloadError::Encode { injector, source };
        let attributes = vec![
            AttributeValue::Origin(Origin::Igp).into(),
            AttributeValue::AsPath(self.as_path_of(injector)).into(),
            AttributeValue::NextHop(next_hop).into(),
        ];
        // Size of the message without NLRI tells how many prefixes fit.
        let mut probe = Update {
            attributes,
            ..Update::default()
        };
        let empty_len = Message::Update(probe.clone())
            .to_bytes(cx)
            .map_err(err)?
            .len();
        let per_message = (MAX_MESSAGE_LEN - empty_len) / NLRI_V4_24_LEN;
        let mut out = Encoded::default();
        let mut batch = BytesMut::with_capacity(BATCH_LEN);
        let mut prefixes = self.prefixes_of(injector).peekable();
        while prefixes.peek().is_some() {
            probe.nlri.clear();
            probe
                .nlri
                .extend(prefixes.by_ref().take(per_message).map(Ipv4Nlri::new));
            let count = probe.nlri.len();
            let message = Message::Update(probe);
            if batch.len() + MAX_MESSAGE_LEN > BATCH_LEN {
                out.batches.push(batch.split().freeze().to_vec());
            }
            message.encode(cx, &mut batch).map_err(err)?;
            let Message::Update(u) = message else {
                unreachable!("built as an UPDATE above")
            };
            probe = u;
            out.messages += 1;
            out.prefixes += count as u64;
        }
        if !batch.is_empty() {
            out.batches.push(batch.to_vec());
        }
        Ok(out)
    }
}

/// Octets of one IPv4 /24 NLRI entry without a path identifier (length octet + 3).
const NLRI_V4_24_LEN: usize = 4;

/// Pre-encoded UPDATEs of one injector.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Whole messages, each batch at most [`BATCH_LEN`] octets.
    pub batches: Vec<Vec<u8>>,
    pub messages: usize,
    pub prefixes: u64,
}

impl Encoded {
    pub fn octets(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_bgp::wire::{Framer, decode_message};

    fn cx() -> DecodeContext {
        DecodeContext {
            four_octet_as: true,
            ..DecodeContext::default()
        }
    }

    /// Decodes every message of `enc` back, returning (messages, prefixes in order).
    fn decode_all(enc: &Encoded) -> (Vec<Update>, Vec<Ipv4Prefix>) {
        let mut updates = Vec::new();
        let mut prefixes = Vec::new();
        for batch in &enc.batches {
            assert!(batch.len() <= BATCH_LEN);
            // Batches hold whole messages: a fresh framer per batch must consume it exactly.
            let mut f = Framer::default();
            f.extend(batch);
            while let Some(frame) = f.next_frame().unwrap() {
                assert!(frame.len() <= MAX_MESSAGE_LEN);
                let Message::Update(u) = decode_message(&frame, &cx()).unwrap() else {
                    panic!("not an UPDATE");
                };
                prefixes.extend(u.nlri.iter().map(|n| n.prefix));
                updates.push(u);
            }
            assert_eq!(f.buffered(), 0, "batch ends inside a message");
        }
        (updates, prefixes)
    }

    #[test]
    fn limits_are_checked() {
        let cases = [
            (Mode::Unique, 0, 10, Some(WorkloadError::Peers(0))),
            (Mode::Unique, 100, 10, Some(WorkloadError::Peers(100))),
            (Mode::Unique, 1, 0, Some(WorkloadError::NoPrefixes)),
            (
                Mode::Unique,
                10,
                1 << 20,
                Some(WorkloadError::TooManyPrefixes { distinct: 10 << 20 }),
            ),
            // `same` needs only M distinct prefixes, so the same P×M fits.
            (Mode::Same, 10, 1 << 20, None),
            (Mode::Unique, 10, 100_000, None),
        ];
        for (mode, peers, prefixes, want) in cases {
            assert_eq!(
                Workload::new(mode, peers, prefixes).err(),
                want,
                "{mode:?} {peers}×{prefixes}"
            );
        }
    }

    #[test]
    fn unique_prefixes_are_disjoint_and_indexed() {
        let w = Workload::new(Mode::Unique, 3, 1000).unwrap();
        assert_eq!(w.distinct(), 3000);
        let mut seen = vec![false; 3000];
        for i in 0..3 {
            for p in w.prefixes_of(i) {
                let ix = w.prefix_index(&p).unwrap();
                assert!(!seen[ix], "{p} announced twice");
                seen[ix] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(w.prefixes_of(0).next().unwrap().to_string(), "16.0.0.0/24");
        assert_eq!(
            w.prefixes_of(2).last().unwrap().to_string(),
            "16.11.183.0/24" // 2999 = 0x0bb7
        );
    }

    #[test]
    fn prefix_index_rejects_what_no_injector_sends() {
        let w = Workload::new(Mode::Unique, 2, 10).unwrap();
        let p = |s: &str| s.parse::<Ipv4Prefix>().unwrap();
        assert_eq!(w.prefix_index(&p("16.0.0.0/24")), Some(0));
        assert_eq!(w.prefix_index(&p("16.0.19.0/24")), Some(19));
        assert_eq!(w.prefix_index(&p("16.0.20.0/24")), None, "past P×M");
        assert_eq!(w.prefix_index(&p("16.0.0.0/16")), None, "not a /24");
        assert_eq!(w.prefix_index(&p("15.255.255.0/24")), None, "below");
        assert_eq!(w.prefix_index(&p("10.0.0.0/24")), None, "lab link");
    }

    #[test]
    fn same_mode_shares_prefixes_and_orders_paths() {
        let w = Workload::new(Mode::Same, 4, 50).unwrap();
        assert_eq!(w.distinct(), 50);
        assert_eq!(w.paths(), 200);
        let a: Vec<_> = w.prefixes_of(0).collect();
        assert_eq!(a, w.prefixes_of(3).collect::<Vec<_>>());
        for i in 0..4 {
            assert_eq!(w.as_path_of(i).path_len(), i + 1);
        }
        // What the monitor sees: the target's AS prepended (eBGP).
        let seen = |asns: &[u32]| AsPath::sequence(asns.iter().copied());
        assert!(w.is_final_path(&seen(&[65000, 65001])));
        assert!(!w.is_final_path(&seen(&[65000, 65002, 65002])));
        assert!(!w.is_final_path(&seen(&[65000, 65001, 65001])));
        assert!(!w.is_final_path(&seen(&[65000])));
        let u = Workload::new(Mode::Unique, 4, 50).unwrap();
        assert!(u.is_final_path(&seen(&[65000, 65003])));
    }

    #[test]
    fn updates_are_full_and_decode_to_exactly_the_prefixes() {
        for (mode, injector) in [(Mode::Unique, 0), (Mode::Unique, 2), (Mode::Same, 3)] {
            let w = Workload::new(mode, 4, 25_000).unwrap();
            let nh = Ipv4Addr::new(10, 0, 0, 11 + injector as u8);
            let enc = w.encode_injector(injector, nh, &cx()).unwrap();
            let (updates, prefixes) = decode_all(&enc);
            assert_eq!(prefixes, w.prefixes_of(injector).collect::<Vec<_>>());
            assert_eq!(enc.prefixes, 25_000);
            assert_eq!(enc.messages, updates.len());
            // Every message but the last is packed: less than one more /24 would fit.
            let sizes: Vec<usize> = updates
                .iter()
                .map(|u| Message::Update(u.clone()).to_bytes(&cx()).unwrap().len())
                .collect();
            for s in &sizes[..sizes.len() - 1] {
                assert!(*s + NLRI_V4_24_LEN > MAX_MESSAGE_LEN, "{s} octets");
            }
            for u in &updates {
                assert!(
                    u.attributes
                        .iter()
                        .any(|a| a.value == AttributeValue::AsPath(w.as_path_of(injector)))
                );
                assert!(
                    u.attributes
                        .iter()
                        .any(|a| a.value == AttributeValue::NextHop(nh))
                );
            }
        }
    }

    #[test]
    fn two_octet_sessions_encode_too() {
        let w = Workload::new(Mode::Unique, 1, 3000).unwrap();
        let enc = w
            .encode_injector(0, Ipv4Addr::new(10, 0, 0, 11), &DecodeContext::default())
            .unwrap();
        let mut f = Framer::default();
        let mut n = 0;
        for b in &enc.batches {
            f.extend(b);
        }
        while let Some(frame) = f.next_frame().unwrap() {
            let Message::Update(u) = decode_message(&frame, &DecodeContext::default()).unwrap()
            else {
                panic!()
            };
            n += u.nlri.len();
        }
        assert_eq!(n, 3000);
    }
}
