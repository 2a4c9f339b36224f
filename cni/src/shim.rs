//! The `tabby-cni` executable's logic: validate the invocation, forward it to the local agent
//! over its unix socket, and turn the answer into stdout + exit code as the CNI spec wants.
//!
//! Owns the client side of the socket (plain blocking std I/O: one request per process, no
//! runtime to start). Must not do any networking work itself; only VERSION is answered locally.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::spec::{
    CniError, Command, DEFAULT_AGENT_SOCKET, ErrorCode, MAX_CONFIG_BYTES, NetConf, Request,
    Version, version_answer,
};
use crate::wire::{MAX_RESPONSE_BYTES, WireRequest, WireResponse};

/// How long the shim waits for the agent's answer. ADD may wait (bounded, in the agent) for a
/// new block; the agent answers 11 well before this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(150);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: Option<Value>,
    pub exit_code: i32,
}

impl Outcome {
    fn ok(stdout: Option<Value>) -> Outcome {
        Outcome {
            stdout,
            exit_code: 0,
        }
    }

    fn error(e: &CniError, version: Version) -> Outcome {
        Outcome {
            stdout: Some(e.to_json(version)),
            exit_code: 1,
        }
    }
}

/// Runs one invocation. `get` reads the environment, `stdin` is the configuration stream.
/// `default_socket` is used when the configuration names none.
pub fn run(
    get: impl Fn(&str) -> Option<String>,
    stdin: impl Read,
    default_socket: &Path,
) -> Outcome {
    // stdin is read first even for VERSION, so the runtime's write of it never hits a closed
    // pipe.
    let mut raw = Vec::new();
    let read = stdin
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut raw);
    if get("CNI_COMMAND").as_deref() == Some(Command::Version.as_str()) {
        return Outcome::ok(Some(version_answer()));
    }
    if let Err(e) = read {
        let err = CniError::new(
            ErrorCode::IO_FAILURE,
            format!("reading the network configuration from stdin: {e}"),
        );
        return Outcome::error(&err, Version::LATEST);
    }
    let version = NetConf::sniff_version(&raw).unwrap_or(Version::LATEST);
    let req = match Request::parse(&get, &raw) {
        Ok(r) => r,
        Err(e) => return Outcome::error(&e, version),
    };
    let socket = req
        .config
        .agent_socket
        .clone()
        .unwrap_or_else(|| default_socket.to_path_buf());
    // Validated above, so it is valid UTF-8 JSON.
    let stdin_text = String::from_utf8_lossy(&raw).into_owned();
    let wire = WireRequest::new(&get, stdin_text);
    match exchange(&socket, &wire, req.env.command) {
        Ok(WireResponse::Ok(stdout)) => Outcome::ok(stdout),
        Ok(WireResponse::Error(e)) | Err(e) => Outcome::error(&e, version),
    }
}

/// The default socket, or `TABBY_CNI_SOCKET` when set (for labs and tests).
pub fn default_socket() -> PathBuf {
    std::env::var_os("TABBY_CNI_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET))
}

fn unavailable(command: Command, msg: String) -> CniError {
    // STATUS has its own code for "cannot serve ADD" (SPEC.md §2 "STATUS").
    let code = if command == Command::Status {
        ErrorCode::PLUGIN_NOT_AVAILABLE
    } else {
        ErrorCode::TRY_AGAIN_LATER
    };
    CniError::new(code, msg)
}

fn exchange(socket: &Path, wire: &WireRequest, command: Command) -> Result<WireResponse, CniError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        unavailable(
            command,
            format!(
                "the Tabby agent is not reachable at {}: {e}; it is not running or not ready yet \
                 (the runtime will retry)",
                socket.display()
            ),
        )
    })?;
    let io = |what: &str, e: std::io::Error| {
        unavailable(
            command,
            format!(
                "{what} the Tabby agent at {}: {e}; the agent may be restarting (the runtime will retry)",
                socket.display()
            ),
        )
    };
    let body = serde_json::to_vec(wire).map_err(|e| {
        CniError::new(
            ErrorCode::DECODE_FAILURE,
            format!("encoding the request: {e}"),
        )
    })?;
    stream
        .set_write_timeout(Some(SEND_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(|e| io("configuring the connection to", e))?;
    // A refusing agent answers without reading the request, so a failed write is only
    // reported when no answer follows.
    let sent = stream
        .write_all(&body)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut answer = Vec::new();
    let read = (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut answer);
    match (sent, read) {
        (_, Ok(_)) if !answer.is_empty() => {}
        (Err(e), _) => return Err(io("sending the request to", e)),
        (Ok(()), Err(e)) => return Err(io("reading the answer of", e)),
        (Ok(()), Ok(_)) => {}
    }
    if answer.is_empty() {
        return Err(unavailable(
            command,
            format!(
                "the Tabby agent at {} closed the connection without answering; it may be \
                 restarting (the runtime will retry)",
                socket.display()
            ),
        ));
    }
    if answer.len() > MAX_RESPONSE_BYTES {
        return Err(CniError::new(
            ErrorCode::DECODE_FAILURE,
            format!("the Tabby agent's answer exceeds {MAX_RESPONSE_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&answer).map_err(|e| {
        CniError::new(
            ErrorCode::DECODE_FAILURE,
            format!("the Tabby agent's answer is not valid: {e}"),
        )
    })
}
