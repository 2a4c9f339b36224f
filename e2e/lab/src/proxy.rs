//! The API proxy: a TCP forwarder listening inside a node's network namespace (on
//! [`crate::plan::NODE_API_ADDR`]) and connecting to kube-sim in the root namespace. It is how
//! agents in node namespaces reach the API server without a management network — TLS passes
//! through untouched, so the agents verify kube-sim's certificate as usual.
//!
//! Owns one listening socket (made inside the namespace, served from the root namespace) and
//! the connections it accepts. Must not look at the bytes it forwards.

use std::fs::File;
use std::net::SocketAddr;

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpStream};

/// Starting the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Setns {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("listening on {addr} in {path}: {source}")]
    Listen {
        addr: SocketAddr,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread that enters {0} died")]
    Thread(String),
}

/// Binds `addr` inside the network namespace at `netns_path` (e.g. `/run/netns/tlab-node-1`).
/// The socket stays in that namespace; the calling thread does not move.
pub fn bind_in_netns(
    netns_path: &str,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, ProxyError> {
    let handle = File::open(netns_path).map_err(|source| ProxyError::Open {
        path: netns_path.into(),
        source,
    })?;
    let path = netns_path.to_string();
    std::thread::spawn(move || {
        setns(&handle, CloneFlags::CLONE_NEWNET).map_err(|source| ProxyError::Setns {
            path: path.clone(),
            source,
        })?;
        let l = std::net::TcpListener::bind(addr).map_err(|source| ProxyError::Listen {
            addr,
            path: path.clone(),
            source,
        })?;
        l.set_nonblocking(true)
            .map_err(|source| ProxyError::Listen { addr, path, source })?;
        Ok(l)
    })
    .join()
    .map_err(|_| ProxyError::Thread(netns_path.into()))?
}

/// Serves `listener` forever: every connection is joined to a new connection to `target`.
pub async fn serve(listener: std::net::TcpListener, target: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let (mut inbound, from) = listener.accept().await?;
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        tracing::debug!(%from, error = %e, "proxied connection ended");
                    }
                }
                Err(e) => tracing::warn!(%from, %target, error = %e, "cannot reach the API server"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_bytes_both_ways() {
        // In our own namespace (no root needed): the forwarding logic is the same.
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[buf[0] + 1, buf[1] + 1, buf[2] + 1, buf[3] + 1])
                .await
                .unwrap();
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        front.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        tokio::spawn(serve(front, target));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[1, 2, 3, 4]).await.unwrap();
        let mut out = [0u8; 4];
        c.read_exact(&mut out).await.unwrap();
        assert_eq!(out, [2, 3, 4, 5]);
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let e = bind_in_netns(
            "/run/netns/tabby-no-such-ns",
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tabby-no-such-ns"), "{e}");
    }
}
