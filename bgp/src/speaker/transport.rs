//! How the speaker's sessions reach their peers: real TCP ([`TcpTransport`]: listeners on the
//! configured addresses plus outgoing connections with MD5/GTSM) or an in-process network
//! ([`MemoryNetwork`]) so multi-speaker tests run without sockets or root. Owns listeners and
//! connectors; knows nothing of BGP beyond a peer's transport options.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::SpeakerError;
use super::config::PeerConfig;
use crate::fsm::collision::Direction;
use crate::session::connection::ConnectFuture;
use crate::session::socket::{ListenPeer, Listener, TcpConnector};
use crate::session::{Connection, Connector, IncomingSender};
use crate::wire::MAX_EXTENDED_MESSAGE_LEN;

/// Connection set-up for the speaker's peers.
pub trait Transport: Send + Sync {
    /// The connector for outgoing connections to `peer` (`None`: passive only).
    fn connector(&self, peer: &PeerConfig) -> Option<Arc<dyn Connector>>;
    /// Start accepting connections from `peer`, delivered to `incoming`.
    fn register(&self, peer: &PeerConfig, incoming: IncomingSender) -> Result<(), SpeakerError>;
    /// Stop accepting connections from `peer`.
    fn unregister(&self, peer: IpAddr);
    /// Addresses actually listened on (with the ports the kernel chose for port 0).
    fn listening(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
}

/// TCP: one [`Listener`] per configured listen address.
pub struct TcpTransport {
    listeners: Vec<Listener>,
}

impl TcpTransport {
    /// Binds every address (must run inside a tokio runtime).
    pub fn bind(addrs: &[SocketAddr]) -> Result<TcpTransport, SpeakerError> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for a in addrs {
            listeners.push(Listener::bind(*a).map_err(|e| SpeakerError::Transport {
                what: format!("listening on {a}"),
                reason: e.to_string(),
            })?);
        }
        Ok(TcpTransport { listeners })
    }
}

impl Transport for TcpTransport {
    fn connector(&self, peer: &PeerConfig) -> Option<Arc<dyn Connector>> {
        if peer.passive {
            return None;
        }
        Some(Arc::new(TcpConnector {
            peer: SocketAddr::new(peer.address, peer.port),
            options: peer.tcp_options(),
        }))
    }

    fn register(&self, peer: &PeerConfig, incoming: IncomingSender) -> Result<(), SpeakerError> {
        for l in &self.listeners {
            // An IPv4 listener cannot take an IPv6 peer and vice versa (dual-stack `[::]`
            // takes both).
            let local = l.local_addr().ip();
            let fits = match (local, peer.address) {
                (IpAddr::V4(_), IpAddr::V6(_)) => false,
                (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified(),
                _ => true,
            };
            if !fits {
                continue;
            }
            l.add_peer(
                peer.address,
                ListenPeer {
                    incoming: incoming.clone(),
                    options: peer.tcp_options(),
                },
            )
            .map_err(|e| SpeakerError::Transport {
                what: format!("accepting peer {}", peer.address),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    fn unregister(&self, peer: IpAddr) {
        for l in &self.listeners {
            if let Err(e) = l.remove_peer(peer) {
                tracing::warn!(%peer, "removing peer from listener: {e}");
            }
        }
    }

    fn listening(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(Listener::local_addr).collect()
    }
}

type Registry = Arc<Mutex<HashMap<(IpAddr, IpAddr), IncomingSender>>>;

/// An in-process network of speakers. Each speaker gets [`MemoryNetwork::transport`] with its
/// own address; a speaker at `a` configured with peer `b` connects to the speaker at `b` if
/// that one has `a` configured as a peer, as if over TCP (connections carry both addresses).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    /// (listener's own address, peer address) → where that speaker's session takes
    /// connections from the peer.
    registry: Registry,
}

impl MemoryNetwork {
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// The transport of the speaker at `address`.
    pub fn transport(&self, address: IpAddr) -> Arc<dyn Transport> {
        Arc::new(MemoryTransport {
            me: address,
            registry: self.registry.clone(),
        })
    }
}

struct MemoryTransport {
    me: IpAddr,
    registry: Registry,
}

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, IpAddr), IncomingSender>> {
    // Single inserts and removes: a poisoned map is still consistent.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transport for MemoryTransport {
    fn connector(&self, peer: &PeerConfig) -> Option<Arc<dyn Connector>> {
        if peer.passive {
            return None;
        }
        Some(Arc::new(MemoryLink {
            me: self.me,
            peer: peer.address,
            port: peer.port,
            registry: self.registry.clone(),
        }))
    }

    fn register(&self, peer: &PeerConfig, incoming: IncomingSender) -> Result<(), SpeakerError> {
        lock(&self.registry).insert((self.me, peer.address), incoming);
        Ok(())
    }

    fn unregister(&self, peer: IpAddr) {
        lock(&self.registry).remove(&(self.me, peer));
    }
}

struct MemoryLink {
    me: IpAddr,
    peer: IpAddr,
    port: u16,
    registry: Registry,
}

impl Connector for MemoryLink {
    fn connect(&self) -> ConnectFuture {
        let target = lock(&self.registry).get(&(self.peer, self.me)).cloned();
        let (me, peer, port) = (self.me, self.peer, self.port);
        Box::pin(async move {
            let Some(tx) = target else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("no speaker at {peer} accepts {me}"),
                ));
            };
            // Room for a few full-size messages per direction: enough that writers rarely
            // wait, small enough that backpressure still works.
            let (ours, theirs) = tokio::io::duplex(4 * MAX_EXTENDED_MESSAGE_LEN);
            let local = SocketAddr::new(me, 40000);
            let remote = SocketAddr::new(peer, port);
            tx.send(Connection {
                stream: Box::new(theirs),
                direction: Direction::Incoming,
                local: Some(remote),
                remote: Some(local),
            })
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "peer session gone"))?;
            Ok(Connection {
                stream: Box::new(ours),
                direction: Direction::Outgoing,
                local: Some(local),
                remote: Some(remote),
            })
        })
    }
}
