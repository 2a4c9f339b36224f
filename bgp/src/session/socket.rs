//! TCP for BGP sessions: outgoing connections and the listener, with TCP MD5 signatures
//! (RFC 2385) and GTSM / TTL security (RFC 5082).
//!
//! Owns socket options and the accept loop. It knows nothing of BGP messages: accepted
//! connections from configured peers go to that peer's session as [`Connection`]s; others are
//! closed and logged. The only `unsafe` is the `setsockopt` calls socket2 does not offer
//! (`TCP_MD5SIG`, `IP_MINTTL`, `IPV6_MINHOPCOUNT`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::connection::{ConnectFuture, Connection, Connector, Direction, IncomingSender};

/// RFC 4271 §8.2.1: the BGP port.
pub const BGP_PORT: u16 = 179;
/// Linux `TCP_MD5SIG_MAXKEYLEN`.
pub const MD5_MAX_KEY_LEN: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("TCP MD5 key for {peer} is {len} octets; at most {MD5_MAX_KEY_LEN} are allowed")]
    Md5KeyTooLong { peer: IpAddr, len: usize },
    #[error("TTL security hop count 0 for {peer}: must be 1..=254")]
    BadTtlSecurity { peer: IpAddr },
    #[error("{what} for {peer}: {source}")]
    Io {
        what: &'static str,
        peer: IpAddr,
        source: io::Error,
    },
}

fn io_err(what: &'static str, peer: IpAddr) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Io { what, peer, source }
}

/// Transport options of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions {
    /// Source address for outgoing connections.
    pub source: Option<IpAddr>,
    /// RFC 2385 key (the password's octets).
    pub md5_key: Option<Vec<u8>>,
    /// RFC 5082 GTSM: the peer is at most this many hops away. We send with TTL 255 and drop
    /// packets that arrive with TTL below 256 − hops.
    pub ttl_security: Option<u8>,
    /// Outgoing TTL when GTSM is off (e.g. 1 for directly connected eBGP); `None`: the default.
    pub ttl: Option<u8>,
    pub connect_timeout: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            source: None,
            md5_key: None,
            ttl_security: None,
            ttl: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Linux `struct tcp_md5sig` (include/uapi/linux/tcp.h).
#[repr(C)]
struct TcpMd5Sig {
    /// `struct __kernel_sockaddr_storage`: the peer's sockaddr_in / sockaddr_in6.
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// A sockaddr for `ip` (port 0) as the kernel lays it out, in a sockaddr_storage.
fn sockaddr_bytes(ip: IpAddr) -> [u8; 128] {
    let mut b = [0u8; 128];
    match ip {
        IpAddr::V4(v4) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&v6.octets());
        }
    }
    b
}

#[allow(unsafe_code)]
fn setsockopt_raw<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option too large"))?;
    // SAFETY: `value` is a live, initialised `T` for the duration of the call and `len` is its
    // exact size; the kernel only reads `len` bytes from it. `fd` is a socket owned by the
    // caller (an invalid fd makes the call fail with EBADF, nothing worse).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or, with an empty key, removes) the RFC 2385 key for `peer` on `fd`. On a
/// listening socket this applies to connections from `peer`; on a connecting socket to the
/// connection. An IPv4 peer on an IPv6 socket is keyed by its v4-mapped address.
pub fn set_md5(fd: RawFd, socket_is_v6: bool, peer: IpAddr, key: &[u8]) -> Result<(), SocketError> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(SocketError::Md5KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    let addr = match peer {
        IpAddr::V4(v4) if socket_is_v6 => IpAddr::V6(v4.to_ipv6_mapped()),
        other => other,
    };
    let mut sig = TcpMd5Sig {
        addr: sockaddr_bytes(addr),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt_raw(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
        .map_err(io_err("setting TCP_MD5SIG", peer))
}

/// RFC 5082 §3: send with TTL 255; accept only TTL ≥ 256 − hops.
pub fn set_gtsm(
    fd: RawFd,
    sock: SockRef<'_>,
    v6: bool,
    peer: IpAddr,
    hops: u8,
) -> Result<(), SocketError> {
    if hops == 0 || hops == 255 {
        return Err(SocketError::BadTtlSecurity { peer });
    }
    let min: libc::c_int = 256 - libc::c_int::from(hops);
    if v6 {
        sock.set_unicast_hops_v6(255)
            .map_err(io_err("setting IPV6_UNICAST_HOPS", peer))?;
        setsockopt_raw(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
            .map_err(io_err("setting IPV6_MINHOPCOUNT", peer))?;
    } else {
        sock.set_ttl_v4(255)
            .map_err(io_err("setting IP_TTL", peer))?;
        setsockopt_raw(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
            .map_err(io_err("setting IP_MINTTL", peer))?;
    }
    Ok(())
}

fn apply_ttl(
    fd: RawFd,
    sock: SockRef<'_>,
    v6: bool,
    peer: IpAddr,
    o: &TcpOptions,
) -> Result<(), SocketError> {
    if let Some(hops) = o.ttl_security {
        set_gtsm(fd, sock, v6, peer, hops)
    } else if let Some(ttl) = o.ttl {
        let r = if v6 {
            sock.set_unicast_hops_v6(u32::from(ttl))
        } else {
            sock.set_ttl_v4(u32::from(ttl))
        };
        r.map_err(io_err("setting TTL", peer))
    } else {
        Ok(())
    }
}

/// Connects to `peer` with `options`.
pub async fn connect(peer: SocketAddr, options: &TcpOptions) -> Result<Connection, SocketError> {
    let ip = peer.ip();
    let v6 = peer.is_ipv6();
    let sock = if v6 {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
    .map_err(io_err("creating socket", ip))?;
    let fd = sock.as_raw_fd();
    if let Some(key) = &options.md5_key {
        set_md5(fd, v6, ip, key)?;
    }
    apply_ttl(fd, SockRef::from(&sock), v6, ip, options)?;
    if let Some(src) = options.source {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(io_err("binding source address", ip))?;
    }
    let stream = match tokio::time::timeout(options.connect_timeout, sock.connect(peer)).await {
        Ok(r) => r.map_err(io_err("connecting", ip))?,
        Err(_) => {
            return Err(SocketError::Io {
                what: "connecting",
                peer: ip,
                source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            });
        }
    };
    Ok(stream_connection(stream, Direction::Outgoing))
}

fn stream_connection(stream: TcpStream, direction: Direction) -> Connection {
    // BGP messages are small and latency matters (KEEPALIVE vs hold timer).
    let _ = stream.set_nodelay(true);
    Connection {
        local: stream.local_addr().ok(),
        remote: stream.peer_addr().ok(),
        stream: Box::new(stream),
        direction,
    }
}

/// [`Connector`] over TCP.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub peer: SocketAddr,
    pub options: TcpOptions,
}

impl Connector for TcpConnector {
    fn connect(&self) -> ConnectFuture {
        let me = self.clone();
        Box::pin(async move {
            connect(me.peer, &me.options).await.map_err(|e| match e {
                SocketError::Io { source, .. } => source,
                other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
            })
        })
    }
}

/// A configured peer as the listener knows it.
#[derive(Debug, Clone)]
pub struct ListenPeer {
    pub incoming: IncomingSender,
    pub options: TcpOptions,
}

struct Shared {
    peers: Mutex<HashMap<IpAddr, ListenPeer>>,
    fd: RawFd,
    v6: bool,
}

/// Accepts BGP connections and hands each to its peer's session; connections from
/// addresses that are not configured peers are closed at once and logged.
pub struct Listener {
    shared: Arc<Shared>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

/// An IPv4 peer reaching a dual-stack socket appears v4-mapped; peers are configured plain.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Listener {
    /// Binds `addr` (e.g. `[::]:179` or `127.0.0.1:0`) and starts accepting.
    pub fn bind(addr: SocketAddr) -> Result<Listener, SocketError> {
        let ip = addr.ip();
        let v6 = addr.is_ipv6();
        let sock = if v6 {
            TcpSocket::new_v6()
        } else {
            TcpSocket::new_v4()
        }
        .map_err(io_err("creating listening socket", ip))?;
        sock.set_reuseaddr(true)
            .map_err(io_err("setting SO_REUSEADDR", ip))?;
        if v6 && addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            // Dual stack: IPv4 peers arrive v4-mapped.
            SockRef::from(&sock)
                .set_only_v6(false)
                .map_err(io_err("clearing IPV6_V6ONLY", ip))?;
        }
        // The SYN-ACK leaves from the listening socket, before any per-peer option applies:
        // send it with TTL 255 so GTSM peers (RFC 5082) accept it. Harmless for others;
        // accepted sockets then get their peer's TTL settings.
        let r = if v6 {
            SockRef::from(&sock).set_unicast_hops_v6(255)
        } else {
            SockRef::from(&sock).set_ttl_v4(255)
        };
        r.map_err(io_err("setting listener TTL", ip))?;
        sock.bind(addr).map_err(io_err("binding listener", ip))?;
        let listener = sock.listen(128).map_err(io_err("listening", ip))?;
        let local = listener
            .local_addr()
            .map_err(io_err("reading listener address", ip))?;
        let shared = Arc::new(Shared {
            peers: Mutex::new(HashMap::new()),
            fd: listener.as_raw_fd(),
            v6,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Listener {
            shared,
            local,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Accept connections from `ip` (replacing any earlier entry) and install its MD5 key on
    /// the listening socket (RFC 2385 needs the key before the SYN arrives).
    pub fn add_peer(&self, ip: IpAddr, peer: ListenPeer) -> Result<(), SocketError> {
        let old_key = self
            .peers()
            .get(&ip)
            .and_then(|p| p.options.md5_key.clone());
        match (&peer.options.md5_key, old_key) {
            (Some(k), _) => set_md5(self.shared.fd, self.shared.v6, ip, k)?,
            (None, Some(_)) => set_md5(self.shared.fd, self.shared.v6, ip, &[])?,
            (None, None) => {}
        }
        self.peers().insert(ip, peer);
        Ok(())
    }

    /// Stop accepting from `ip` and remove its MD5 key.
    pub fn remove_peer(&self, ip: IpAddr) -> Result<(), SocketError> {
        let removed = self.peers().remove(&ip);
        if removed.is_some_and(|p| p.options.md5_key.is_some()) {
            set_md5(self.shared.fd, self.shared.v6, ip, &[])?;
        }
        Ok(())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, ListenPeer>> {
        lock(&self.shared)
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, HashMap<IpAddr, ListenPeer>> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    s.peers.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(remote.ip());
        let peer = lock(&shared).get(&ip).cloned();
        let Some(peer) = peer else {
            warn!(%remote, "connection from an unconfigured address refused");
            continue;
        };
        let v6 = remote.is_ipv6();
        if let Err(e) = apply_ttl(
            stream.as_raw_fd(),
            SockRef::from(&stream),
            v6,
            ip,
            &peer.options,
        ) {
            warn!(%remote, "connection refused: {e}");
            continue;
        }
        let conn = stream_connection(stream, Direction::Incoming);
        if peer.incoming.try_send(conn).is_err() {
            debug!(%remote, "session busy or gone; connection dropped");
        }
    }
}
