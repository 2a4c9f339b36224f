//! The byte streams a session runs over: real TCP or an in-memory pipe.
//!
//! Owns the [`Connection`] type and the [`Connector`] trait (how a session opens its outgoing
//! connection). It knows nothing of BGP. The in-memory implementation lets two sessions talk
//! without sockets, so multi-speaker tests run anywhere and fast (with tokio's paused clock).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub use crate::fsm::collision::Direction;

/// A bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One transport connection to a peer.
pub struct Connection {
    pub stream: Box<dyn Stream>,
    pub direction: Direction,
    /// Addresses, when the transport has them (TCP).
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("direction", &self.direction)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// A boxed future of a connection attempt.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Connection>> + Send>>;

/// How a session initiates its outgoing connection.
pub trait Connector: Send + Sync {
    fn connect(&self) -> ConnectFuture;
}

/// A connector whose attempts start no earlier than `at`; later attempts go straight through.
///
/// Used when a session is replaced (a configuration change resets it): the old session's
/// NOTIFICATION and close reach the peer first, and the peer has a moment to tear its side
/// down before the new connection arrives. FRR with `bgp listen range` has been seen to wedge a
/// dynamic neighbour that reconnects within milliseconds of its Cease — its side stays in
/// OpenSent with the OPEN queued and unsent, ours waits for the 4-minute OpenSent hold time.
/// Connections the peer opens are not delayed: a peer that connects is ready.
pub struct NotBefore {
    inner: std::sync::Arc<dyn Connector>,
    at: tokio::time::Instant,
}

impl NotBefore {
    pub fn new(inner: std::sync::Arc<dyn Connector>, at: tokio::time::Instant) -> NotBefore {
        NotBefore { inner, at }
    }
}

impl Connector for NotBefore {
    fn connect(&self) -> ConnectFuture {
        let (at, inner) = (self.at, self.inner.clone());
        Box::pin(async move {
            tokio::time::sleep_until(at).await;
            inner.connect().await
        })
    }
}

/// Where a session receives connections the peer opened (from a listener or a
/// [`MemoryConnector`]).
pub type IncomingSender = mpsc::Sender<Connection>;
pub type IncomingReceiver = mpsc::Receiver<Connection>;

/// A channel for incoming connections; the session owns the receiver.
pub fn incoming_channel() -> (IncomingSender, IncomingReceiver) {
    mpsc::channel(4)
}

/// Connects to another in-process session: each attempt makes a pipe and hands the far end to
/// the peer's incoming channel, as if the peer's listener had accepted it.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    peer_incoming: IncomingSender,
    /// Pipe buffer per direction, in bytes.
    pub buffer: usize,
}

impl MemoryConnector {
    pub fn new(peer_incoming: IncomingSender) -> MemoryConnector {
        MemoryConnector {
            peer_incoming,
            buffer: 64 * 1024,
        }
    }
}

impl Connector for MemoryConnector {
    fn connect(&self) -> ConnectFuture {
        let tx = self.peer_incoming.clone();
        let buffer = self.buffer;
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(buffer);
            let far = Connection {
                stream: Box::new(theirs),
                direction: Direction::Incoming,
                local: None,
                remote: None,
            };
            tx.send(far).await.map_err(|_| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "in-memory peer is gone")
            })?;
            Ok(Connection {
                stream: Box::new(ours),
                direction: Direction::Outgoing,
                local: None,
                remote: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn not_before_holds_the_first_attempt_until_its_time_only() {
        let (tx, mut rx) = incoming_channel();
        let start = Instant::now();
        let c = NotBefore::new(
            Arc::new(MemoryConnector::new(tx)),
            start + Duration::from_secs(2),
        );
        let attempt = tokio::spawn(c.connect());
        tokio::time::sleep(Duration::from_millis(1999)).await;
        assert!(rx.try_recv().is_err(), "the peer saw a connection early");
        assert!(!attempt.is_finished());
        let conn = attempt.await.unwrap().unwrap();
        assert_eq!(conn.direction, Direction::Outgoing);
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert!(rx.try_recv().is_ok(), "the peer got the connection");
        // Past its time the wrapper adds nothing.
        let again = Instant::now();
        c.connect().await.unwrap();
        assert_eq!(again.elapsed(), Duration::ZERO);
    }
}
