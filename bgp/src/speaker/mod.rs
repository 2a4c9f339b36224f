//! The BGP speaker: sessions joined to the RIB.
//!
//! One tokio task, the speaker loop ([`core`]), owns the [`Rib`](crate::rib::Rib), the update
//! groups, the peer table and the policies; nothing else touches them, so there are no locks on
//! the routing data. Each session stays its own task (see [`crate::session`]): it decodes, runs
//! its FSM and reports on a channel; the loop drains every pending report before it runs best
//! path changes through the update groups once and encodes each group's UPDATEs once for all
//! its members. [`Speaker`] is the cloneable handle: requests go to the loop over a channel and
//! come back on a oneshot.
//!
//! This module owns the public API and the request plumbing. It must not reach into sessions'
//! sockets or the RIB's tables: those belong to [`crate::session`] and [`crate::rib`].

mod config;
mod core;
mod status;
mod subscribe;
mod transport;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use crate::session::ConnectFailure;
pub use config::{
    AddPathConfig, ConfigError, GracefulRestartSettings, MaxPrefixConfig, PeerChange, PeerConfig,
    SpeakerConfig, classify_change,
};
pub use status::{
    AdjRoute, DURATION_BUCKETS, DurationHistogram, Metrics, NotificationInfo, PathAttrsView,
    PathInfo, PeerMetrics, PeerStatus, RouteInfo, RouteUpdate,
};
pub use subscribe::Subscription;
pub use transport::{MemoryNetwork, TcpTransport, Transport};

use crate::policy::{PolicyConfig, PolicyError};
use crate::rib::{PathAttrs, Prefix};

/// Errors of speaker requests. Each names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeakerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("peer {0} is already configured")]
    DuplicatePeer(IpAddr),
    #[error("peer {0} is not configured")]
    UnknownPeer(IpAddr),
    #[error("peer {peer}: {field} names policy {name:?}, which does not exist")]
    UnknownPolicy {
        peer: IpAddr,
        field: &'static str,
        name: String,
    },
    #[error("policy {name:?} does not exist")]
    NoSuchPolicy { name: String },
    #[error("policy {name:?} is used by peers {peers:?}")]
    PolicyInUse { name: String, peers: Vec<IpAddr> },
    #[error("{what}: {reason}")]
    Transport { what: String, reason: String },
    #[error("the speaker has stopped")]
    Stopped,
}

/// What a policy change did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyApplied {
    /// The policy is new (no peer can be using it yet).
    pub created: bool,
    /// Peers asked for a route refresh (import side).
    pub refreshed: Vec<IpAddr>,
    /// Peers reset because they support no route refresh.
    pub reset: Vec<IpAddr>,
    /// Update groups re-exported (export side).
    pub export_groups: usize,
}

type Reply<T> = oneshot::Sender<T>;

/// A request to the speaker loop.
enum Request {
    AddPeer(Box<PeerConfig>, Reply<Result<(), SpeakerError>>),
    UpdatePeer(Box<PeerConfig>, Reply<Result<PeerChange, SpeakerError>>),
    RemovePeer(IpAddr, Reply<Result<(), SpeakerError>>),
    SetPolicy(PolicyConfig, Reply<Result<PolicyApplied, SpeakerError>>),
    RemovePolicy(String, Reply<Result<(), SpeakerError>>),
    Originate(Prefix, Box<PathAttrs>, Reply<()>),
    Withdraw(Prefix, Reply<bool>),
    Subscribe(Reply<Subscription>),
    Peers(Reply<Vec<PeerStatus>>),
    RibLookup(Prefix, Reply<Option<RouteInfo>>),
    AdjRibIn(IpAddr, Reply<Result<Vec<AdjRoute>, SpeakerError>>),
    AdjRibOut(IpAddr, Reply<Result<Vec<AdjRoute>, SpeakerError>>),
    Metrics(Reply<Metrics>),
    Shutdown {
        graceful_restart: bool,
        done: Reply<()>,
    },
}

/// A handle on a running speaker. Cloning is cheap; the speaker stops (with Cease /
/// Administrative Shutdown to every peer) when [`Speaker::shutdown`] is called or every handle
/// is dropped.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::Sender<Request>,
    listening: Arc<Vec<SocketAddr>>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Starts a speaker over TCP, listening on `cfg.listen`. Must run inside a tokio runtime.
    pub fn start(cfg: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let transport = Arc::new(TcpTransport::bind(&cfg.listen)?);
        Speaker::start_with_transport(cfg, transport)
    }

    /// Starts a speaker whose sessions connect through `transport` (e.g. a [`MemoryNetwork`]).
    pub fn start_with_transport(
        cfg: SpeakerConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Speaker, SpeakerError> {
        if cfg.asn == 0 || cfg.asn == crate::wire::Asn::TRANS.0 {
            return Err(ConfigError {
                peer: None,
                field: "asn",
                reason: format!("{} is reserved (RFC 7607, RFC 6793)", cfg.asn),
            }
            .into());
        }
        if cfg.router_id.is_unspecified() {
            return Err(ConfigError {
                peer: None,
                field: "router_id",
                reason: "0.0.0.0 is not a BGP identifier (RFC 6286)".into(),
            }
            .into());
        }
        if cfg.best_path.max_paths == 0 {
            return Err(ConfigError {
                peer: None,
                field: "best_path.max_paths",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let listening = Arc::new(transport.listening());
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(core::Loop::new(cfg, transport).run(rx));
        Ok(Speaker { tx, listening })
    }

    /// The addresses the speaker listens on (ports filled in).
    pub fn listening(&self) -> &[SocketAddr] {
        &self.listening
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Adds a peer and starts its session. Other sessions are not touched.
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.ask(|r| Request::AddPeer(Box::new(peer), r)).await?
    }

    /// Applies a new configuration of an existing peer (same address) and says what that
    /// took: nothing, a live change, a route refresh, or a reset of this peer alone.
    pub async fn update_peer(&self, peer: PeerConfig) -> Result<PeerChange, SpeakerError> {
        self.ask(|r| Request::UpdatePeer(Box::new(peer), r)).await?
    }

    /// Removes a peer: Cease / Peer De-configured, and its routes are withdrawn.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|r| Request::RemovePeer(address, r)).await?
    }

    /// Adds or replaces the policy named `policy.name`. A replaced import policy makes its
    /// peers resend their routes (route refresh); a replaced export policy re-exports to its
    /// update groups. No session resets unless a peer lacks route refresh.
    pub async fn set_policy(&self, policy: PolicyConfig) -> Result<PolicyApplied, SpeakerError> {
        self.ask(|r| Request::SetPolicy(policy, r)).await?
    }

    /// Removes an unused policy.
    pub async fn remove_policy(&self, name: &str) -> Result<(), SpeakerError> {
        let name = name.to_string();
        self.ask(|r| Request::RemovePolicy(name, r)).await?
    }

    /// Originates `prefix` with `attrs` (an unspecified next hop means this router: exports
    /// rewrite it to the session address). Replaces an earlier origination of the prefix.
    pub async fn originate(&self, prefix: Prefix, attrs: PathAttrs) -> Result<(), SpeakerError> {
        self.ask(|r| Request::Originate(prefix, Box::new(attrs), r))
            .await
    }

    /// Withdraws a prefix originated here; false if it was not.
    pub async fn withdraw(&self, prefix: Prefix) -> Result<bool, SpeakerError> {
        self.ask(|r| Request::Withdraw(prefix, r)).await
    }

    /// The best-path stream for the forwarding table: the current table first, then changes.
    pub async fn subscribe(&self) -> Result<Subscription, SpeakerError> {
        self.ask(Request::Subscribe).await
    }

    /// Status of every peer, by address.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        self.ask(Request::Peers).await
    }

    /// Every path of exactly `prefix` in the Loc-RIB.
    pub async fn rib_lookup(&self, prefix: Prefix) -> Result<Option<RouteInfo>, SpeakerError> {
        self.ask(|r| Request::RibLookup(prefix, r)).await
    }

    /// The routes held from a peer (post-policy Adj-RIB-In).
    pub async fn adj_rib_in(&self, peer: IpAddr) -> Result<Vec<AdjRoute>, SpeakerError> {
        self.ask(|r| Request::AdjRibIn(peer, r)).await?
    }

    /// The routes sent to a peer, with the attributes it receives (empty when the session is
    /// not established).
    pub async fn adj_rib_out(&self, peer: IpAddr) -> Result<Vec<AdjRoute>, SpeakerError> {
        self.ask(|r| Request::AdjRibOut(peer, r)).await?
    }

    pub async fn metrics(&self) -> Result<Metrics, SpeakerError> {
        self.ask(Request::Metrics).await
    }

    /// Stops every session with Cease / Administrative Shutdown (RFC 4486, RFC 9003) and ends
    /// the speaker.
    pub async fn shutdown(&self) -> Result<(), SpeakerError> {
        self.ask(|done| Request::Shutdown {
            graceful_restart: false,
            done,
        })
        .await
    }

    /// Ends the speaker for a graceful restart (RFC 4724 §4.1): connections are closed
    /// without a NOTIFICATION, so peers that negotiated graceful restart keep our routes and
    /// keep forwarding while we come back.
    pub async fn shutdown_for_restart(&self) -> Result<(), SpeakerError> {
        self.ask(|done| Request::Shutdown {
            graceful_restart: true,
            done,
        })
        .await
    }
}
