//! Why an outgoing connection did not come up, as a type rather than as words.
//!
//! Owns the mapping from the transport's `io::Error` (its kind, and the raw OS error where the
//! kind is not specific enough) to a [`ConnectFailure`], and the words an operator reads for each
//! cause. It does not decide what to do about a failure: the FSM retries on its ConnectRetry
//! timer, and the speaker decides what to report.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::Serialize;

/// Why an outgoing connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    /// The peer answered our SYN with a RST: nothing listens on the port there, or the peer
    /// refuses us.
    Refused,
    /// No route to the peer, or an ICMP unreachable came back (`EHOSTUNREACH`, `ENETUNREACH`,
    /// `ENETDOWN`, `EHOSTDOWN`).
    Unreachable,
    /// Nothing came back at all: the SYNs are dropped (a firewall, an absent host, or an MD5
    /// mismatch — RFC 2385 §2.0 drops a segment without the right digest unanswered).
    /// `waited`: how long the attempt had been waiting, when known.
    NoAnswer { waited: Option<Duration> },
    /// Anything else (binding the source address, a socket option, …), in the OS's words.
    Other(String),
}

impl ConnectFailure {
    /// Classifies a failed connect. The kind decides where it is specific; raw OS errors cover
    /// the causes that older or other mappings leave as an unspecific kind.
    pub fn from_io(e: &io::Error) -> ConnectFailure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => return ConnectFailure::Refused,
            io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown => return ConnectFailure::Unreachable,
            io::ErrorKind::TimedOut => return ConnectFailure::NoAnswer { waited: None },
            _ => {}
        }
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTDOWN) => {
                ConnectFailure::Unreachable
            }
            Some(libc::ETIMEDOUT) => ConnectFailure::NoAnswer { waited: None },
            _ => ConnectFailure::Other(e.to_string()),
        }
    }

    /// A stable one-word name of the cause, for status pages and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::NoAnswer { .. } => "no_answer",
            ConnectFailure::Other(_) => "other",
        }
    }

    /// The peer (or the path to it) said nothing: the one cause an MD5 mismatch produces.
    pub fn is_silent(&self) -> bool {
        matches!(self, ConnectFailure::NoAnswer { .. })
    }
}

impl From<&io::Error> for ConnectFailure {
    fn from(e: &io::Error) -> ConnectFailure {
        ConnectFailure::from_io(e)
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::Unreachable => {
                f.write_str("peer unreachable (no route or ICMP unreachable)")
            }
            ConnectFailure::NoAnswer { waited: Some(d) } => {
                write!(f, "no answer within {} s", d.as_secs().max(1))
            }
            ConnectFailure::NoAnswer { waited: None } => f.write_str("no answer (timed out)"),
            ConnectFailure::Other(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_causes() {
        let cases: &[(io::Error, ConnectFailure)] = &[
            // Kinds, as a TCP connect reports them on Linux.
            (
                io::ErrorKind::ConnectionRefused.into(),
                ConnectFailure::Refused,
            ),
            (
                io::ErrorKind::HostUnreachable.into(),
                ConnectFailure::Unreachable,
            ),
            (
                io::ErrorKind::NetworkUnreachable.into(),
                ConnectFailure::Unreachable,
            ),
            (
                io::ErrorKind::NetworkDown.into(),
                ConnectFailure::Unreachable,
            ),
            (
                io::ErrorKind::TimedOut.into(),
                ConnectFailure::NoAnswer { waited: None },
            ),
            // Raw OS errors, which carry their kind too.
            (
                io::Error::from_raw_os_error(libc::ECONNREFUSED),
                ConnectFailure::Refused,
            ),
            (
                io::Error::from_raw_os_error(libc::EHOSTUNREACH),
                ConnectFailure::Unreachable,
            ),
            (
                io::Error::from_raw_os_error(libc::ENETUNREACH),
                ConnectFailure::Unreachable,
            ),
            (
                io::Error::from_raw_os_error(libc::ENETDOWN),
                ConnectFailure::Unreachable,
            ),
            // EHOSTDOWN has no specific kind: the raw error decides.
            (
                io::Error::from_raw_os_error(libc::EHOSTDOWN),
                ConnectFailure::Unreachable,
            ),
            (
                io::Error::from_raw_os_error(libc::ETIMEDOUT),
                ConnectFailure::NoAnswer { waited: None },
            ),
            // The session's own connect timeout.
            (
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                ConnectFailure::NoAnswer { waited: None },
            ),
        ];
        for (e, want) in cases {
            assert_eq!(&ConnectFailure::from_io(e), want, "{e:?}");
        }
    }

    #[test]
    fn other_errors_keep_the_os_words() {
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        let got = ConnectFailure::from_io(&e);
        assert_eq!(got, ConnectFailure::Other(e.to_string()));
        assert!(!got.is_silent());
        let e = io::Error::other("in-memory transport closed");
        assert_eq!(
            ConnectFailure::from(&e).to_string(),
            "in-memory transport closed"
        );
    }

    #[test]
    fn words_and_silence() {
        let cases = [
            (ConnectFailure::Refused, "connection refused", false),
            (
                ConnectFailure::Unreachable,
                "peer unreachable (no route or ICMP unreachable)",
                false,
            ),
            (
                ConnectFailure::NoAnswer {
                    waited: Some(Duration::from_millis(300)),
                },
                "no answer within 1 s",
                true,
            ),
            (
                ConnectFailure::NoAnswer {
                    waited: Some(Duration::from_secs(5)),
                },
                "no answer within 5 s",
                true,
            ),
            (
                ConnectFailure::NoAnswer { waited: None },
                "no answer (timed out)",
                true,
            ),
        ];
        for (f, words, silent) in cases {
            assert_eq!(f.to_string(), words);
            assert_eq!(f.kind() == "no_answer", silent, "{f:?}");
            assert_eq!(f.is_silent(), silent, "{f:?}");
        }
    }
}
