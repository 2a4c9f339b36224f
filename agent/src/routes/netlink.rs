//! The netlink edge: encodes the diff's operations as `RTM_NEWROUTE` / `RTM_DELROUTE` requests,
//! sends them in batches, reads route dumps and route notifications back into the model.
//!
//! Owns: sockets of the `NETLINK_ROUTE` family and the mapping between kernel route messages and
//! [`KernelRoute`]. Must not touch: desired state or policy — it writes exactly the operations it
//! is given and reports each one's outcome.
//!
//! Speed: requests go many per `send` (up to [`BATCH_BYTES`]). Only the last request of a batch
//! asks for an acknowledgement; the kernel answers every failed request with an error anyway
//! (`netlink_rcv_skb` acks on `NLM_F_ACK` *or* error), and it processes a batch in order inside
//! the `send` call, so once the last request's ack is read every error of the batch has been read
//! too. That saves one reply message per route. If replies are lost to a receive-buffer overrun
//! (`ENOBUFS`) the batch's outcome is [`Outcome::Unknown`] and the caller resyncs from a dump.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{AsyncSocket, Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

use super::diff::Op;
use super::model::{KernelRoute, NextHop, RouteKey, Target};

/// Bytes of requests per `send`. Well under the default socket send buffer (212,992 bytes), so
/// no tuning is needed on the sending side.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Receive buffer we ask for (with `SO_RCVBUFFORCE` when root, else capped by `rmem_max`): room
/// for errors of a whole batch and for notification bursts while we program 100k routes.
const RCVBUF_BYTES: usize = 32 * 1024 * 1024;

/// A reply should come within the `send` call; this only bounds a kernel that misbehaves.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Multicast groups for route notifications (`RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`).
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

const RTM_NEWROUTE: u16 = 24;

/// Attribute in an extended ack carrying the kernel's error text (`NLMSGERR_ATTR_MSG`).
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Everything that can go wrong on the netlink edge as a whole (per-route failures are
/// [`Outcome::Failed`] instead).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink: reply {what} could not be parsed: {detail}")]
    Decode { what: &'static str, detail: String },
    #[error("netlink: receive buffer overrun while reading {what}; state must be resynced")]
    Overrun { what: &'static str },
    #[error("netlink: kernel refused the {what} request: {source}")]
    Refused {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink: route dump kept being interrupted by concurrent changes ({tries} tries)")]
    DumpInterrupted { tries: u32 },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { what, source }
}

/// Outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The kernel refused it: errno and, when the kernel gave one, its extended-ack text.
    Failed {
        errno: i32,
        message: Option<String>,
    },
    /// Its reply was lost (receive overrun): the kernel state must be read back.
    Unknown,
}

impl Outcome {
    /// Describes a failure in words, e.g. `File exists (os error 17)` plus the kernel's text.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Done => "done".into(),
            Outcome::Unknown => "outcome unknown (netlink replies lost)".into(),
            Outcome::Failed { errno, message } => {
                let e = io::Error::from_raw_os_error(*errno);
                match message {
                    Some(m) => format!("{e}: {m}"),
                    None => e.to_string(),
                }
            }
        }
    }
}

fn family_of(prefix: &IpNet) -> AddressFamily {
    match prefix {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

/// The route message for `key` → `target`, written under `protocol`.
pub fn route_message(key: &RouteKey, target: &Target, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = family_of(&key.prefix);
    h.destination_prefix_length = key.prefix.prefix_len();
    // Tables above 255 only fit in RTA_TABLE; the header then says "unspecified".
    h.table = u8::try_from(key.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    h.protocol = RouteProtocol::from(protocol);
    h.scope = RouteScope::Universe;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            key.prefix.addr(),
        )));
    m.attributes.push(RouteAttribute::Table(key.table));
    m.attributes.push(RouteAttribute::Priority(key.metric));
    match target {
        Target::Blackhole => m.header.kind = RouteType::BlackHole,
        Target::Other(t) => m.header.kind = RouteType::from(*t),
        Target::Unicast(hops) => {
            m.header.kind = RouteType::Unicast;
            match hops.as_slice() {
                [one] => {
                    if one.gateway.is_none() {
                        // A device route reaches the neighbour directly (a pod's veth).
                        m.header.scope = RouteScope::Link;
                    }
                    if let Some(g) = one.gateway {
                        m.attributes
                            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
                    }
                    if let Some(i) = one.ifindex {
                        m.attributes.push(RouteAttribute::Oif(i));
                    }
                }
                many => {
                    let hops = many
                        .iter()
                        .map(|nh| {
                            let mut rnh = RouteNextHop::default();
                            rnh.interface_index = nh.ifindex.unwrap_or(0);
                            if let Some(g) = nh.gateway {
                                rnh.attributes
                                    .push(RouteAttribute::Gateway(RouteAddress::from(g)));
                            }
                            rnh
                        })
                        .collect();
                    m.attributes.push(RouteAttribute::MultiPath(hops));
                }
            }
        }
    }
    m
}

/// The delete request for our route `key` (of type `target`): it names our protocol, metric,
/// table and type so the kernel can only match our route, and no next hops so a multipath route
/// goes as a whole (IPv6 `fc_delete_all_nh`).
pub fn delete_message(key: &RouteKey, target: &Target, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = family_of(&key.prefix);
    h.destination_prefix_length = key.prefix.prefix_len();
    h.table = u8::try_from(key.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    h.protocol = RouteProtocol::from(protocol);
    // RT_SCOPE_NOWHERE: match any scope, as `ip route del` does.
    h.scope = RouteScope::NoWhere;
    h.kind = match target {
        Target::Blackhole => RouteType::BlackHole,
        Target::Unicast(_) => RouteType::Unicast,
        Target::Other(t) => RouteType::from(*t),
    };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            key.prefix.addr(),
        )));
    m.attributes.push(RouteAttribute::Table(key.table));
    m.attributes.push(RouteAttribute::Priority(key.metric));
    m
}

/// Netlink flags and message for one operation.
pub fn encode_op(op: &Op, protocol: u8) -> (u16, RouteNetlinkMessage) {
    match op {
        Op::Add { key, target } => (
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
            RouteNetlinkMessage::NewRoute(route_message(key, target, protocol)),
        ),
        Op::Replace { key, target } => (
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
            RouteNetlinkMessage::NewRoute(route_message(key, target, protocol)),
        ),
        Op::Delete { key, target } => (
            NLM_F_REQUEST,
            RouteNetlinkMessage::DelRoute(delete_message(key, target, protocol)),
        ),
    }
}

/// Appends one netlink message to `buf`; returns its offset.
fn push_message(buf: &mut Vec<u8>, flags: u16, seq: u32, payload: RouteNetlinkMessage) -> usize {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let off = buf.len();
    let len = msg.buffer_len();
    // Netlink messages are 4-byte aligned (NLMSG_ALIGN); route messages always are, but pad
    // anyway so a longer attribute can never misalign the next request.
    let padded = (len + 3) & !3;
    buf.resize(off + padded, 0);
    msg.serialize(&mut buf[off..off + len]);
    off
}

/// Offset of the destination address in a request built by [`route_message`] or
/// [`delete_message`]: netlink header (16) + `rtmsg` (12) + the `RTA_DST` attribute header (4).
/// `RTA_DST` is always the first attribute.
const DST_OFFSET: usize = 16 + 12 + 4;

/// Encodes operations into a batch. Requests in bulk mostly share one shape — same kind,
/// family, prefix length, table, metric and target — and differ only in the destination and
/// the sequence number, so after the crate has serialised one request of a shape, the next of
/// the same shape is that request's bytes with those two fields rewritten. This keeps encoding
/// well under the kernel's own per-route cost.
#[derive(Default)]
struct Encoder {
    /// The last request serialised by the crate: its op (destination ignored) and byte range.
    template: Option<(Op, std::ops::Range<usize>)>,
}

fn same_shape(a: &Op, b: &Op) -> bool {
    let (ka, kb) = (a.key(), b.key());
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && ka.prefix.prefix_len() == kb.prefix.prefix_len()
        && ka.prefix.addr().is_ipv4() == kb.prefix.addr().is_ipv4()
        && (ka.table, ka.metric) == (kb.table, kb.metric)
        && target_of(a) == target_of(b)
}

fn target_of(op: &Op) -> &Target {
    match op {
        Op::Add { target, .. } | Op::Replace { target, .. } | Op::Delete { target, .. } => target,
    }
}

impl Encoder {
    /// Appends `op` with sequence number `seq`; returns the request's offset in `buf`.
    fn push(&mut self, buf: &mut Vec<u8>, op: &Op, seq: u32, protocol: u8) -> usize {
        if let Some((shape, range)) = &self.template
            && same_shape(shape, op)
            && range.end <= buf.len()
        {
            let off = buf.len();
            let range = range.clone();
            buf.extend_from_within(range);
            buf[off + 8..off + 12].copy_from_slice(&seq.to_ne_bytes());
            match op.key().prefix.addr() {
                IpAddr::V4(a) => {
                    buf[off + DST_OFFSET..off + DST_OFFSET + 4].copy_from_slice(&a.octets())
                }
                IpAddr::V6(a) => {
                    buf[off + DST_OFFSET..off + DST_OFFSET + 16].copy_from_slice(&a.octets())
                }
            }
            return off;
        }
        let (flags, msg) = encode_op(op, protocol);
        let off = push_message(buf, flags, seq, msg);
        self.template = Some((op.clone(), off..buf.len()));
        off
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Reads a kernel route message into the model. `None` for what the reconciler never manages:
/// families other than IPv4/IPv6, cached clones, prefixes the kernel cannot have sent.
pub fn parse_route(msg: &RouteMessage) -> Option<KernelRoute> {
    let h = &msg.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut dst = None;
    let mut table = u32::from(h.table);
    let mut metric = 0;
    let mut gateway = None;
    let mut oif = None;
    let mut multipath = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip_of(d),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let addr = dst.unwrap_or(unspecified);
    if addr.is_ipv4() != unspecified.is_ipv4() {
        return None;
    }
    let prefix = IpNet::new(addr, h.destination_prefix_length).ok()?;
    let target = match h.kind {
        RouteType::BlackHole => Target::Blackhole,
        RouteType::Unicast => {
            let hops = match multipath {
                Some(hops) => hops
                    .iter()
                    .map(|nh| NextHop {
                        gateway: nh.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => ip_of(g),
                            _ => None,
                        }),
                        ifindex: (nh.interface_index != 0).then_some(nh.interface_index),
                    })
                    .collect(),
                None if gateway.is_some() || oif.is_some() => vec![NextHop {
                    gateway,
                    ifindex: oif,
                }],
                None => vec![],
            };
            Target::unicast(hops)
        }
        other => Target::Other(u8::from(other)),
    };
    Some(KernelRoute {
        key: RouteKey::new(prefix, table, metric),
        tos: h.tos,
        protocol: u8::from(h.protocol),
        target,
    })
}

/// A kernel route change seen on the notification socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    New(KernelRoute),
    Del(KernelRoute),
}

/// Splits a datagram into netlink messages and decodes each; undecodable messages are skipped
/// and counted (a kernel newer than our parser must not stop us).
fn for_each_message(
    data: &[u8],
    mut f: impl FnMut(&NetlinkHeader, NetlinkPayload<RouteNetlinkMessage>),
) -> usize {
    let mut skipped = 0;
    let mut off = 0;
    while off + 16 <= data.len() {
        let Ok(nb) = NetlinkBuffer::new_checked(&data[off..]) else {
            return skipped + 1;
        };
        let len = nb.length() as usize;
        if len < 16 || off + len > data.len() {
            return skipped + 1;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]) {
            Ok(m) => f(&m.header, m.payload),
            Err(e) => {
                tracing::debug!(error = %e, "skipping undecodable netlink message");
                skipped += 1;
            }
        }
        off += (len + 3) & !3;
    }
    skipped
}

/// Sequence number and extended-ack text of an error/ack message (its payload after the code:
/// the request's header, then, with `NETLINK_EXT_ACK`, attributes).
fn error_details(header_and_tlvs: &[u8]) -> (Option<u32>, Option<String>) {
    let seq = header_and_tlvs
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes);
    // With NETLINK_CAP_ACK the echoed request is only its 16-byte header.
    let mut tlvs = header_and_tlvs.get(16..).unwrap_or(&[]);
    let mut text = None;
    while tlvs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]);
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &tlvs[4..len];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            text = Some(String::from_utf8_lossy(s).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    (seq, text)
}

fn set_big_rcvbuf(sock: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
        // Not root: the kernel caps this at net.core.rmem_max; overruns are handled by resync.
        let _ = sock.set_rx_buf_sz(RCVBUF_BYTES);
    }
}

/// A request socket: batches of route operations, dumps and lookups. Blocking: every call
/// completes within the kernel's processing of the request (rtnetlink runs requests inside
/// `send`), so it never waits on anything but the kernel.
pub struct RouteSocket {
    sock: Socket,
    seq: u32,
    protocol: u8,
    buf: Vec<u8>,
    rx: Vec<u8>,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace; `protocol` is the route
    /// protocol written on every route.
    pub fn new(protocol: u8) -> Result<RouteSocket, NetlinkError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io_err("opening socket"))?;
        sock.bind_auto().map_err(io_err("binding socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(io_err("connecting to the kernel"))?;
        // Errors echo only the request header, and carry the kernel's explanation.
        sock.set_cap_ack(true).map_err(io_err("NETLINK_CAP_ACK"))?;
        sock.set_ext_ack(true).map_err(io_err("NETLINK_EXT_ACK"))?;
        // Strict checking: dump filters (table) are honoured, not silently ignored.
        sock.set_netlink_get_strict_chk(true)
            .map_err(io_err("NETLINK_GET_STRICT_CHK"))?;
        set_big_rcvbuf(&sock);
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0),
        )
        .map_err(|e| NetlinkError::Io {
            what: "SO_RCVTIMEO",
            source: e.into(),
        })?;
        Ok(RouteSocket {
            sock,
            seq: 1,
            protocol,
            buf: Vec::with_capacity(BATCH_BYTES + 4096),
            rx: vec![0; 1 << 20],
        })
    }

    fn recv(&mut self, what: &'static str) -> Result<usize, NetlinkError> {
        let mut slice = &mut self.rx[..];
        match self.sock.recv(&mut slice, libc::MSG_TRUNC) {
            Ok(n) if n > self.rx.len() => Err(NetlinkError::Decode {
                what,
                detail: format!(
                    "datagram of {n} bytes exceeds our {} byte buffer",
                    self.rx.len()
                ),
            }),
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                Err(NetlinkError::Overrun { what })
            }
            Err(e) => Err(NetlinkError::Io { what, source: e }),
        }
    }

    /// Applies `ops` in order, many per `send`; one outcome per op, in the same order. An `Err`
    /// means the socket itself failed (the ops not yet sent are reported as `Unknown`).
    pub fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, NetlinkError> {
        let mut outcomes = vec![Outcome::Done; ops.len()];
        let mut next = 0;
        while next < ops.len() {
            let start = next;
            let base = self.seq;
            self.buf.clear();
            let mut last_off = 0;
            let mut encoder = Encoder::default();
            while next < ops.len() && self.buf.len() < BATCH_BYTES {
                last_off = encoder.push(
                    &mut self.buf,
                    &ops[next],
                    base.wrapping_add((next - start) as u32),
                    self.protocol,
                );
                next += 1;
            }
            let count = next - start;
            self.seq = base.wrapping_add(count as u32);
            let last_seq = base.wrapping_add(count as u32 - 1);
            // Only the last request asks for an ack (see the module comment).
            let flags_at = last_off + 6;
            let flags =
                u16::from_ne_bytes([self.buf[flags_at], self.buf[flags_at + 1]]) | NLM_F_ACK;
            self.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
            if let Err(e) = self.sock.send(&self.buf, 0) {
                for o in &mut outcomes[start..] {
                    *o = Outcome::Unknown;
                }
                return Err(NetlinkError::Io {
                    what: "sending route requests",
                    source: e,
                });
            }
            let mut done = false;
            while !done {
                let n = match self.recv("route request acks") {
                    Ok(n) => n,
                    Err(NetlinkError::Overrun { .. }) => {
                        // Replies lost: whatever was not reported as failed is uncertain.
                        for o in &mut outcomes[start..next] {
                            if *o == Outcome::Done {
                                *o = Outcome::Unknown;
                            }
                        }
                        self.drain();
                        break;
                    }
                    Err(e) => {
                        for o in &mut outcomes[start..] {
                            *o = Outcome::Unknown;
                        }
                        return Err(e);
                    }
                };
                let rx = std::mem::take(&mut self.rx);
                for_each_message(&rx[..n], |_, payload| {
                    let NetlinkPayload::Error(err) = payload else {
                        return;
                    };
                    let (seq, text) = error_details(&err.header);
                    let Some(seq) = seq else { return };
                    let idx = seq.wrapping_sub(base) as usize;
                    if idx >= count {
                        return; // a stale reply from an earlier, abandoned batch
                    }
                    if let Some(code) = err.code {
                        outcomes[start + idx] = Outcome::Failed {
                            errno: code.get().abs(),
                            message: text,
                        };
                    }
                    if seq == last_seq {
                        done = true;
                    }
                });
                self.rx = rx;
            }
        }
        Ok(outcomes)
    }

    /// Reads and discards whatever replies are queued.
    fn drain(&mut self) {
        loop {
            let mut slice = &mut self.rx[..];
            match self.sock.recv(&mut slice, libc::MSG_DONTWAIT) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => return,
            }
        }
    }

    /// Dumps the IPv4 and IPv6 routes of `table` (all protocols). Retries when the kernel says
    /// the dump was interrupted by concurrent changes (`NLM_F_DUMP_INTR`).
    pub fn dump(&mut self, table: u32) -> Result<Vec<KernelRoute>, NetlinkError> {
        const TRIES: u32 = 5;
        for _ in 0..TRIES {
            let mut routes = Vec::new();
            let mut interrupted = false;
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut req = RouteMessage::default();
                req.header.address_family = family;
                req.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
                req.attributes.push(RouteAttribute::Table(table));
                interrupted |= self.dump_one(req, &mut routes)?;
            }
            if !interrupted {
                return Ok(routes);
            }
        }
        Err(NetlinkError::DumpInterrupted { tries: TRIES })
    }

    fn dump_one(
        &mut self,
        req: RouteMessage,
        routes: &mut Vec<KernelRoute>,
    ) -> Result<bool, NetlinkError> {
        let (msgs, interrupted) =
            self.dump_messages(RouteNetlinkMessage::GetRoute(req), "route dump")?;
        for m in msgs {
            if let RouteNetlinkMessage::NewRoute(m) = m
                && let Some(r) = parse_route(&m)
            {
                routes.push(r);
            }
        }
        Ok(interrupted)
    }

    /// Sends one dump request (links, addresses, routes...) and collects every reply message;
    /// the flag says whether the kernel marked the dump interrupted (`NLM_F_DUMP_INTR`).
    pub fn dump_messages(
        &mut self,
        req: RouteNetlinkMessage,
        what: &'static str,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.buf.clear();
        push_message(&mut self.buf, NLM_F_REQUEST | NLM_F_DUMP, seq, req);
        self.sock
            .send(&self.buf, 0)
            .map_err(|source| NetlinkError::Io {
                what: "sending a dump request",
                source,
            })?;
        let mut msgs = Vec::new();
        let mut interrupted = false;
        let mut finished = false;
        let mut failure = None;
        while !finished {
            let n = self.recv(what)?;
            let rx = std::mem::take(&mut self.rx);
            for_each_message(&rx[..n], |h, payload| {
                if h.sequence_number != seq {
                    return;
                }
                if h.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => msgs.push(m),
                    NetlinkPayload::Done(_) => finished = true,
                    NetlinkPayload::Error(e) => {
                        finished = true;
                        if e.code.is_some() {
                            failure = Some(e.to_io());
                        }
                    }
                    _ => {}
                }
            });
            self.rx = rx;
        }
        match failure {
            Some(source) => Err(NetlinkError::Refused { what, source }),
            None => Ok((msgs, interrupted)),
        }
    }

    /// Counts the IPv4 + IPv6 routes of `protocol` in `table` without decoding them: the
    /// kernel filters the dump (strict checking) and we only walk message headers. For
    /// benchmarks and tests that poll "are all N routes in the FIB yet".
    pub fn count(&mut self, table: u32, protocol: u8) -> Result<usize, NetlinkError> {
        let mut total = 0;
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            req.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
            req.header.protocol = RouteProtocol::from(protocol);
            req.attributes.push(RouteAttribute::Table(table));
            self.buf.clear();
            push_message(
                &mut self.buf,
                NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                RouteNetlinkMessage::GetRoute(req),
            );
            self.sock
                .send(&self.buf, 0)
                .map_err(io_err("sending route count request"))?;
            'recv: loop {
                let n = self.recv("route count")?;
                let mut off = 0;
                while off + 16 <= n {
                    let Ok(nb) = NetlinkBuffer::new_checked(&self.rx[off..n]) else {
                        break;
                    };
                    let len = nb.length() as usize;
                    if len < 16 {
                        break;
                    }
                    if nb.sequence_number() == seq {
                        match nb.message_type() {
                            // NLMSG_DONE, NLMSG_ERROR
                            3 | 2 => break 'recv,
                            // rtm_protocol is byte 5 of the route header; filtered by the
                            // kernel with strict checking, checked again here.
                            RTM_NEWROUTE if self.rx.get(off + 16 + 5) == Some(&protocol) => {
                                total += 1;
                            }
                            _ => {}
                        }
                    }
                    off += (len + 3) & !3;
                }
            }
        }
        Ok(total)
    }

    /// Asks the kernel which route it would use to reach `dst` (`ip route get`): the outgoing
    /// interface index and the preferred source address, when it has them.
    pub fn lookup(&mut self, dst: IpAddr) -> Result<(Option<u32>, Option<IpAddr>), NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut req = RouteMessage::default();
        req.header.address_family = match dst {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        req.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        req.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        self.buf.clear();
        push_message(
            &mut self.buf,
            NLM_F_REQUEST,
            seq,
            RouteNetlinkMessage::GetRoute(req),
        );
        self.sock
            .send(&self.buf, 0)
            .map_err(io_err("sending route lookup"))?;
        loop {
            let n = self.recv("route lookup")?;
            let rx = std::mem::take(&mut self.rx);
            let mut answer = None;
            for_each_message(&rx[..n], |h, payload| {
                if h.sequence_number != seq {
                    return;
                }
                match payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => {
                        let mut oif = None;
                        let mut src = None;
                        for a in &m.attributes {
                            match a {
                                RouteAttribute::Oif(i) => oif = Some(*i),
                                RouteAttribute::PrefSource(s) => src = ip_of(s),
                                _ => {}
                            }
                        }
                        answer = Some(Ok((oif, src)));
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        answer = Some(Err(NetlinkError::Refused {
                            what: "route lookup",
                            source: e.to_io(),
                        }));
                    }
                    _ => {}
                }
            });
            self.rx = rx;
            if let Some(a) = answer {
                return a;
            }
        }
    }
}

/// A socket subscribed to IPv4 and IPv6 route notifications.
pub struct RouteMonitor {
    sock: TokioSocket,
    rx: Vec<u8>,
}

impl RouteMonitor {
    /// Subscribes in the calling thread's network namespace. Must be called inside a Tokio
    /// runtime (the socket registers with its reactor).
    pub fn new() -> Result<RouteMonitor, NetlinkError> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE).map_err(io_err("opening monitor socket"))?;
        let s = sock.socket_mut();
        s.bind_auto().map_err(io_err("binding monitor socket"))?;
        for g in [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            s.add_membership(g)
                .map_err(io_err("joining route notification groups"))?;
        }
        set_big_rcvbuf(s);
        Ok(RouteMonitor {
            sock,
            rx: vec![0; 1 << 20],
        })
    }

    fn decode(&self, n: usize, events: &mut Vec<RouteEvent>) {
        for_each_message(&self.rx[..n], |_, payload| match payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => {
                if let Some(r) = parse_route(&m) {
                    events.push(RouteEvent::New(r));
                }
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => {
                if let Some(r) = parse_route(&m) {
                    events.push(RouteEvent::Del(r));
                }
            }
            _ => {}
        });
    }

    /// Waits until at least one notification datagram arrives, then returns it and everything
    /// else already queued. `Overrun` means notifications were lost: resync from a dump.
    pub async fn next(&mut self) -> Result<Vec<RouteEvent>, NetlinkError> {
        use netlink_sys::AsyncSocketExt;
        let mut events = Vec::new();
        let n = {
            let total = self.rx.len();
            let mut slice = &mut self.rx[..];
            match self.sock.recv(&mut slice).await {
                Ok(()) => total - slice.len(),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun {
                        what: "route notifications",
                    });
                }
                Err(e) => {
                    return Err(NetlinkError::Io {
                        what: "reading route notifications",
                        source: e,
                    });
                }
            }
        };
        self.decode(n, &mut events);
        self.drain_into(&mut events)?;
        Ok(events)
    }

    /// Everything queued right now, without waiting.
    pub fn drain(&mut self) -> Result<Vec<RouteEvent>, NetlinkError> {
        let mut events = Vec::new();
        self.drain_into(&mut events)?;
        Ok(events)
    }

    fn drain_into(&mut self, events: &mut Vec<RouteEvent>) -> Result<(), NetlinkError> {
        loop {
            let mut slice = &mut self.rx[..];
            match self.sock.socket_ref().recv(&mut slice, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    let n = n.min(self.rx.len());
                    self.decode(n, events);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun {
                        what: "route notifications",
                    });
                }
                Err(e) => {
                    return Err(NetlinkError::Io {
                        what: "reading route notifications",
                        source: e,
                    });
                }
            }
        }
    }
}

/// Parses a buffer of netlink messages as route notifications (for tests and tools).
pub fn decode_events(data: &[u8]) -> (Vec<RouteEvent>, usize) {
    let mut events = Vec::new();
    let skipped = for_each_message(data, |_, payload| match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => {
            if let Some(r) = parse_route(&m) {
                events.push(RouteEvent::New(r));
            }
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => {
            if let Some(r) = parse_route(&m) {
                events.push(RouteEvent::Del(r));
            }
        }
        _ => {}
    });
    (events, skipped)
}

/// Serialises ops as they would be sent (for tests and tools): the message types in order.
pub fn encode_batch(ops: &[Op], protocol: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut encoder = Encoder::default();
    for (i, op) in ops.iter().enumerate() {
        encoder.push(&mut buf, op, i as u32, protocol);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn key(s: &str) -> RouteKey {
        RouteKey::new(net(s), 254, 32)
    }
    fn via(hops: &[&str]) -> Target {
        Target::unicast(
            hops.iter()
                .map(|h| NextHop::via(h.parse().unwrap()))
                .collect(),
        )
    }

    /// Encoding then decoding a route gives the same route: the request and the kernel's
    /// notification share one layout.
    #[test]
    fn encode_decode_round_trip() {
        let cases = [
            (key("10.1.0.0/26"), via(&["10.0.0.1"])),
            (key("10.1.0.0/26"), via(&["10.0.0.1", "10.0.0.2"])),
            (key("10.1.0.0/26"), Target::Blackhole),
            (key("10.1.0.5/32"), Target::Unicast(vec![NextHop::dev(7)])),
            (key("fd00:1::/64"), via(&["fd00::1", "fd00::2"])),
            (key("fd00:1::/64"), Target::Blackhole),
            (RouteKey::new(net("0.0.0.0/0"), 1000, 5), via(&["10.0.0.1"])),
            (
                key("fd00:2::/64"),
                Target::Unicast(vec![NextHop {
                    gateway: Some("fe80::1".parse().unwrap()),
                    ifindex: Some(4),
                }]),
            ),
        ];
        for (k, t) in cases {
            let ops = [Op::Add {
                key: k,
                target: t.clone(),
            }];
            let bytes = encode_batch(&ops, 84);
            let (events, skipped) = decode_events(&bytes);
            assert_eq!(skipped, 0);
            // A request is RTM_NEWROUTE like a notification; decode treats it as one.
            assert_eq!(
                events,
                vec![RouteEvent::New(KernelRoute {
                    key: k,
                    tos: 0,
                    protocol: 84,
                    target: t
                })],
                "{k}"
            );
        }
    }

    /// A batch of same-shaped requests (the template path) decodes to exactly the routes asked
    /// for, with consecutive sequence numbers, across shape changes in the middle.
    #[test]
    fn templated_batch_decodes_to_every_route() {
        let mut ops = Vec::new();
        for i in 0..50u32 {
            let p4 =
                IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 6)), 26).unwrap());
            let p6 = IpNet::V6(
                ipnet::Ipv6Net::new(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i) << 64), 64)
                    .unwrap(),
            );
            let t = if i % 10 < 5 {
                via(&["10.0.0.1"])
            } else {
                Target::Blackhole
            };
            ops.push(Op::Add {
                key: RouteKey::new(p4, 254, 32),
                target: t,
            });
            ops.push(Op::Replace {
                key: RouteKey::new(p6, 254, 32),
                target: via(&["fd00::1", "fd00::2"]),
            });
            ops.push(Op::Delete {
                key: RouteKey::new(p4, 100, 7),
                target: Target::Blackhole,
            });
        }
        let bytes = encode_batch(&ops, 84);
        let mut seqs = Vec::new();
        let mut decoded = Vec::new();
        for_each_message(&bytes, |h, payload| {
            seqs.push(h.sequence_number);
            if let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m),
            ) = payload
            {
                decoded.push(parse_route(&m).unwrap());
            }
        });
        assert_eq!(seqs, (0..ops.len() as u32).collect::<Vec<_>>());
        assert_eq!(decoded.len(), ops.len());
        for (op, r) in ops.iter().zip(&decoded) {
            assert_eq!(&r.key, op.key());
            if !matches!(op, Op::Delete { .. }) {
                assert_eq!(&r.target, target_of(op));
            }
        }
    }

    #[test]
    fn flags_say_excl_for_add_replace_for_replace() {
        let t = via(&["10.0.0.1"]);
        let k = key("10.1.0.0/26");
        let (f, _) = encode_op(
            &Op::Add {
                key: k,
                target: t.clone(),
            },
            84,
        );
        assert_eq!(f, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
        let (f, _) = encode_op(
            &Op::Replace {
                key: k,
                target: t.clone(),
            },
            84,
        );
        assert_eq!(f, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE);
        let (f, m) = encode_op(&Op::Delete { key: k, target: t }, 84);
        assert_eq!(f, NLM_F_REQUEST);
        let RouteNetlinkMessage::DelRoute(m) = m else {
            panic!("not a delete")
        };
        assert_eq!(u8::from(m.header.protocol), 84, "deletes name our protocol");
        assert!(m.attributes.contains(&RouteAttribute::Priority(32)));
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::MultiPath(_)))
        );
    }

    #[test]
    fn garbage_is_skipped_never_a_panic() {
        let mut bytes = encode_batch(
            &[Op::Add {
                key: key("10.1.0.0/26"),
                target: Target::Blackhole,
            }],
            84,
        );
        for cut in 0..bytes.len() {
            let _ = decode_events(&bytes[..cut]);
        }
        // Length field claiming more than there is.
        bytes[0] = 0xff;
        let (events, skipped) = decode_events(&bytes);
        assert!(events.is_empty());
        assert_eq!(skipped, 1);
        // Random bytes.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = decode_events(&noise);
    }

    #[test]
    fn error_details_read_seq_and_kernel_text() {
        let mut p = Vec::new();
        p.extend_from_slice(&36u32.to_ne_bytes());
        p.extend_from_slice(&24u16.to_ne_bytes());
        p.extend_from_slice(&0u16.to_ne_bytes());
        p.extend_from_slice(&4242u32.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        let msg = b"Nexthop has invalid gateway\0";
        p.extend_from_slice(&((4 + msg.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(msg);
        assert_eq!(
            error_details(&p),
            (Some(4242), Some("Nexthop has invalid gateway".into()))
        );
        assert_eq!(error_details(&p[..5]), (None, None));
        // A TLV claiming more than there is stops the walk.
        let mut bad = p.clone();
        bad[16] = 0xff;
        assert_eq!(error_details(&bad), (Some(4242), None));
    }

    #[test]
    fn outcome_describes_errno_and_text() {
        let o = Outcome::Failed {
            errno: libc::EEXIST,
            message: Some("route exists".into()),
        };
        let s = o.describe();
        assert!(s.contains("exists") && s.contains("route exists"), "{s}");
    }
}
