//! The CNI protocol as data: versions, commands, the `CNI_*` environment, the network
//! configuration on stdin, results and error objects — parsed, validated and serialised.
//!
//! Owns the rules of the CNI specification (1.0.0 and 1.1.0; results in 0.3.x/0.4.0 format too).
//! Must not touch sockets, processes or the kernel: everything here is a pure function over
//! strings, bytes and `serde_json` values, so the shim and the agent run the very same checks.
//!
//! Error codes follow the specification's "Error" section (SPEC.md §2 "Errors"): 1 incompatible
//! version, 2 unsupported field, 3 unknown container, 4 invalid environment variables, 5 I/O
//! failure, 6 decode failure, 7 invalid network configuration, 11 try again later, 50/51 plugin
//! not available (STATUS). Codes from 100 up are Tabby's own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Largest network configuration accepted on stdin. Real configurations are a few hundred bytes;
/// this bound keeps a runaway writer from making the shim or the agent allocate without limit.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Interface names are limited by the kernel's IFNAMSIZ (16 bytes with the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// A CNI specification version this plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every version we accept in a configuration and answer in, oldest first.
    pub const ALL: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    /// The newest version; what `VERSION` reports as its own.
    pub const LATEST: Version = Version::V1_1_0;

    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether `command` exists in this version: CHECK came with 0.4.0, STATUS and GC with 1.1.0.
    pub fn has_command(self, command: Command) -> bool {
        match command {
            Command::Add | Command::Del | Command::Version => true,
            Command::Check => self >= Version::V0_4_0,
            Command::Status | Command::Gc => self >= Version::V1_1_0,
        }
    }

    /// Before 1.0.0 every `ips` entry carried `"version": "4"|"6"` (removed in 1.0.0).
    fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Interface `mtu`/`socketPath`/`pciID` and route `mtu`/`advmss`/`priority`/`table`/`scope`
    /// were added in 1.1.0.
    fn has_1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    #[serde(rename = "ADD")]
    Add,
    #[serde(rename = "DEL")]
    Del,
    #[serde(rename = "CHECK")]
    Check,
    #[serde(rename = "STATUS")]
    Status,
    #[serde(rename = "GC")]
    Gc,
    #[serde(rename = "VERSION")]
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Which of `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` the command needs (SPEC.md §2
    /// "Parameters" and each operation's input list). DEL may come after the netns is gone.
    fn needs(self) -> (bool, bool, bool) {
        match self {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Status | Command::Gc | Command::Version => (false, false, false),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CNI error code. The well-known ones are constants; the agent may answer others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const INCOMPATIBLE_VERSION: ErrorCode = ErrorCode(1);
    pub const UNSUPPORTED_FIELD: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_CONTAINER: ErrorCode = ErrorCode(3);
    pub const INVALID_ENV: ErrorCode = ErrorCode(4);
    pub const IO_FAILURE: ErrorCode = ErrorCode(5);
    pub const DECODE_FAILURE: ErrorCode = ErrorCode(6);
    pub const INVALID_NETWORK_CONFIG: ErrorCode = ErrorCode(7);
    pub const TRY_AGAIN_LATER: ErrorCode = ErrorCode(11);
    pub const PLUGIN_NOT_AVAILABLE: ErrorCode = ErrorCode(50);
    pub const LIMITED_CONNECTIVITY: ErrorCode = ErrorCode(51);
    /// Tabby: the agent failed while doing the work (netlink, IPAM API); details say where.
    pub const AGENT_FAILURE: ErrorCode = ErrorCode(100);
    /// Tabby: CHECK found the pod's networking not as it should be.
    pub const CHECK_FAILED: ErrorCode = ErrorCode(101);
    /// Tabby: the agent refused the caller (not root).
    pub const PERMISSION_DENIED: ErrorCode = ErrorCode(102);
}

/// A CNI error object (SPEC.md §2 "Errors"): what the plugin prints on stdout with exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code.0, if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object as printed, with `cniVersion` first.
    pub fn to_json(&self, version: Version) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), version.as_str().into());
        m.insert("code".into(), self.code.0.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        Value::Object(m)
    }
}

fn env_error(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::INVALID_ENV, msg)
}

fn config_error(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::INVALID_NETWORK_CONFIG, msg)
}

/// The Kubernetes pod a request is for, from `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
/// `K8S_POD_UID`, as kubelet/containerd/CRI-O pass them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniArgs {
    pub pairs: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. Empty segments (a trailing `;`) are allowed; a segment without `=` or
    /// with an empty key is an error naming the segment.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = BTreeMap::new();
        for seg in s.split(';').filter(|seg| !seg.is_empty()) {
            let (k, v) = seg.split_once('=').ok_or_else(|| {
                env_error(format!(
                    "CNI_ARGS: `{seg}` is not KEY=VALUE (pairs are separated by `;`)"
                ))
            })?;
            if k.is_empty() {
                return Err(env_error(format!("CNI_ARGS: `{seg}` has an empty key")));
            }
            pairs.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// The pod, when both `K8S_POD_NAMESPACE` and `K8S_POD_NAME` are present and valid
    /// Kubernetes names (DNS-1123: lowercase alphanumerics, `-`, `.`; ≤ 253 bytes).
    pub fn pod(&self) -> Result<Option<PodRef>, CniError> {
        let (ns, name) = match (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME")) {
            (None, None) => return Ok(None),
            (Some(ns), Some(name)) => (ns, name),
            (Some(_), None) => {
                return Err(env_error(
                    "CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME",
                ));
            }
            (None, Some(_)) => {
                return Err(env_error(
                    "CNI_ARGS has K8S_POD_NAME but no K8S_POD_NAMESPACE",
                ));
            }
        };
        for (key, v) in [("K8S_POD_NAMESPACE", ns), ("K8S_POD_NAME", name)] {
            if !is_k8s_name(v) {
                return Err(env_error(format!(
                    "CNI_ARGS: {key}=`{v}` is not a valid Kubernetes name"
                )));
            }
        }
        let uid = match self.get("K8S_POD_UID") {
            None | Some("") => None,
            Some(uid)
                if uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') =>
            {
                Some(uid.to_string())
            }
            Some(uid) => {
                return Err(env_error(format!(
                    "CNI_ARGS: K8S_POD_UID=`{uid}` is not a UID"
                )));
            }
        };
        Ok(Some(PodRef {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid,
        }))
    }
}

fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`: the spec's rule for container IDs and network names.
fn is_cni_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The kernel's interface name rules (net/core/dev.c `dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!("is {} bytes; at most {MAX_IFNAME_LEN}", name.len()));
    }
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain `/`, `:` or whitespace".into());
    }
    Ok(())
}

/// The `CNI_*` environment of one invocation, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
    pub pod: Option<PodRef>,
    /// `CNI_PATH`. Tabby never executes other plugins, so it is recorded, not required.
    pub path: Vec<PathBuf>,
}

/// The `CNI_*` variables, in the form the shim forwards them to the agent.
pub const ENV_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

impl Env {
    /// Reads and validates the environment through `get` (e.g. `|k| std::env::var(k).ok()`).
    /// Every missing variable the command needs is named in one error (code 4).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let command_raw = nonempty("CNI_COMMAND")
            .ok_or_else(|| env_error("required environment variable CNI_COMMAND is missing"))?;
        let command = Command::parse(&command_raw).ok_or_else(|| {
            env_error(format!(
                "CNI_COMMAND=`{command_raw}` is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
            ))
        })?;
        let (need_id, need_netns, need_ifname) = command.needs();
        let container_id = nonempty("CNI_CONTAINERID");
        let netns = nonempty("CNI_NETNS");
        let ifname = nonempty("CNI_IFNAME");
        let missing: Vec<&str> = [
            (need_id && container_id.is_none(), "CNI_CONTAINERID"),
            (need_netns && netns.is_none(), "CNI_NETNS"),
            (need_ifname && ifname.is_none(), "CNI_IFNAME"),
        ]
        .into_iter()
        .filter_map(|(m, k)| m.then_some(k))
        .collect();
        if !missing.is_empty() {
            return Err(env_error(format!(
                "{command} needs environment variable{} {}, missing",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        if let Some(id) = &container_id
            && !is_cni_name(id)
        {
            return Err(env_error(format!(
                "CNI_CONTAINERID=`{id}` is invalid: it must start with a letter or digit and \
                 contain only letters, digits, `_`, `.` and `-`"
            )));
        }
        if let Some(ns) = &netns
            && !ns.starts_with('/')
        {
            return Err(env_error(format!(
                "CNI_NETNS=`{ns}` is not an absolute path to a network namespace"
            )));
        }
        if let Some(name) = &ifname {
            validate_ifname(name).map_err(|why| env_error(format!("CNI_IFNAME=`{name}` {why}")))?;
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        let pod = args.pod()?;
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns: netns.map(PathBuf::from),
            ifname,
            args,
            pod,
            path,
        })
    }
}

/// The network configuration given on stdin (one plugin entry of a conflist, with `name` and
/// `cniVersion` copied in by the runtime).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: Version,
    pub name: String,
    pub plugin_type: String,
    /// Tabby: the agent's socket, when not the default.
    pub agent_socket: Option<PathBuf>,
    /// Tabby: the pods' MTU; detected from the host's interfaces when absent.
    pub mtu: Option<u32>,
    /// The previous plugin's result in a chain (always present for CHECK).
    pub prev_result: Option<CniResult>,
    /// `runtimeConfig`: capability arguments from the runtime (e.g. `portMappings`), passed on.
    pub runtime_config: Map<String, Value>,
    /// `args` (conventions, e.g. `args.cni.ips`), passed on.
    pub args: Map<String, Value>,
    /// The whole object as given, for the agent to read other conventions from.
    pub raw: Map<String, Value>,
}

/// Default path of the agent's socket.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/tabby/cni.sock";

/// The `type` Tabby's configuration must carry; the runtime executes the binary of that name.
pub const PLUGIN_TYPE: &str = "tabby-cni";

impl NetConf {
    /// Only the `cniVersion` of a configuration, for answering errors in the caller's version
    /// even when the rest does not parse.
    pub fn sniff_version(stdin: &[u8]) -> Option<Version> {
        let v: Value = serde_json::from_slice(stdin).ok()?;
        Version::parse(v.get("cniVersion")?.as_str()?)
    }

    /// Parses and validates stdin for `command`: 6 when it is not JSON, 1 for a version we do
    /// not speak (or one without the command), 2 for a field Tabby cannot honour, 7 otherwise.
    pub fn parse(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
        if stdin.len() > MAX_CONFIG_BYTES {
            return Err(config_error(format!(
                "network configuration is {} bytes; at most {MAX_CONFIG_BYTES} accepted",
                stdin.len()
            )));
        }
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::DECODE_FAILURE,
                format!("network configuration on stdin is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(raw) = value else {
            return Err(CniError::new(
                ErrorCode::DECODE_FAILURE,
                "network configuration on stdin is not a JSON object",
            ));
        };
        let str_field = |key: &str| -> Result<Option<&str>, CniError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(config_error(format!(
                    "`{key}` must be a string, not {}",
                    json_kind(other)
                ))),
            }
        };
        let version_raw = str_field("cniVersion")?
            .ok_or_else(|| config_error("network configuration has no `cniVersion`"))?;
        let cni_version = Version::parse(version_raw).ok_or_else(|| {
            CniError::new(
                ErrorCode::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion `{version_raw}` is not supported; tabby speaks {}",
                    supported_list()
                ),
            )
        })?;
        if !cni_version.has_command(command) {
            return Err(CniError::new(
                ErrorCode::INCOMPATIBLE_VERSION,
                format!("{command} does not exist in CNI {cni_version}"),
            ));
        }
        let name = str_field("name")?
            .ok_or_else(|| config_error("network configuration has no `name`"))?;
        if !is_cni_name(name) {
            return Err(config_error(format!(
                "network name `{name}` is invalid: it must start with a letter or digit and \
                 contain only letters, digits, `_`, `.` and `-`"
            )));
        }
        let plugin_type = str_field("type")?
            .ok_or_else(|| config_error("network configuration has no `type`"))?;
        if plugin_type != PLUGIN_TYPE {
            return Err(config_error(format!(
                "`type` is `{plugin_type}`; this plugin is `{PLUGIN_TYPE}`"
            )));
        }
        if let Some(ipam) = raw.get("ipam")
            && !matches!(ipam, Value::Null)
            && ipam.as_object().is_none_or(|o| !o.is_empty())
        {
            return Err(CniError::new(
                ErrorCode::UNSUPPORTED_FIELD,
                format!(
                    "unsupported field `ipam` = {ipam}: the Tabby agent allocates pod addresses \
                     itself; remove the `ipam` section"
                ),
            ));
        }
        let agent_socket = match str_field("agentSocket")? {
            None => None,
            Some(p) if p.starts_with('/') => Some(PathBuf::from(p)),
            Some(p) => {
                return Err(config_error(format!(
                    "`agentSocket` = `{p}` must be an absolute path"
                )));
            }
        };
        let mtu = match raw.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                // 68 is IPv4's minimum (RFC 791); 1280 would be IPv6's, checked by the kernel.
                Some(m @ 68..=65535) => Some(m as u32),
                _ => {
                    return Err(config_error(format!(
                        "`mtu` = {v} must be an integer between 68 and 65535"
                    )));
                }
            },
        };
        let object_field = |key: &str| -> Result<Map<String, Value>, CniError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(other) => Err(config_error(format!(
                    "`{key}` must be an object, not {}",
                    json_kind(other)
                ))),
            }
        };
        let runtime_config = object_field("runtimeConfig")?;
        let args = object_field("args")?;
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                CniResult::from_json(v)
                    .map_err(|e| config_error(format!("`prevResult` is invalid: {e}")))?,
            ),
        };
        if command == Command::Check && prev_result.is_none() {
            return Err(config_error(
                "CHECK needs `prevResult` (the result the runtime cached at ADD)",
            ));
        }
        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type: plugin_type.to_string(),
            agent_socket,
            mtu,
            prev_result,
            runtime_config,
            args,
            raw,
        })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn supported_list() -> String {
    Version::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer to `VERSION` (SPEC.md §2 "VERSION").
pub fn version_answer() -> Value {
    json!({
        "cniVersion": Version::LATEST.as_str(),
        "supportedVersions": Version::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// One entry of `cni.dev/valid-attachments` in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The key under which GC lists the attachments still in use (SPEC.md §2 "GC").
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

impl NetConf {
    /// GC's list of attachments to keep; absent means none.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        match self.raw.get(VALID_ATTACHMENTS) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| config_error(format!("`{VALID_ATTACHMENTS}` is invalid: {e}"))),
        }
    }
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host-side interfaces.
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

/// One address of a result; `interface` indexes `CniResult::interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

/// DNS settings of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result (SPEC.md §5 "Result Types"), independent of the version it is printed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// The result printed in `version`: fields that version does not know are left out.
    pub fn to_json(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.as_str().into());
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut m = Map::new();
                    m.insert("name".into(), i.name.clone().into());
                    if let Some(mac) = &i.mac {
                        m.insert("mac".into(), mac.clone().into());
                    }
                    if version.has_1_1_fields()
                        && let Some(mtu) = i.mtu
                    {
                        m.insert("mtu".into(), mtu.into());
                    }
                    if let Some(s) = &i.sandbox {
                        m.insert("sandbox".into(), s.clone().into());
                    }
                    if version.has_1_1_fields() {
                        if let Some(s) = &i.socket_path {
                            m.insert("socketPath".into(), s.clone().into());
                        }
                        if let Some(s) = &i.pci_id {
                            m.insert("pciID".into(), s.clone().into());
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if version.ips_carry_version() {
                        let fam = if ip.address.addr().is_ipv4() {
                            "4"
                        } else {
                            "6"
                        };
                        m.insert("version".into(), fam.into());
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), i.into());
                    }
                    m.insert("address".into(), ip.address.to_string().into());
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), gw.to_string().into());
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            let list = self
                .routes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("dst".into(), r.dst.to_string().into());
                    if let Some(gw) = r.gw {
                        m.insert("gw".into(), gw.to_string().into());
                    }
                    if version.has_1_1_fields() {
                        for (k, v) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                            ("scope", r.scope),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), v.into());
                            }
                        }
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("routes".into(), Value::Array(list));
        }
        if !self.dns.is_empty() {
            out.insert(
                "dns".into(),
                serde_json::to_value(&self.dns).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }

    /// Reads a result of any supported version (0.x `version` fields are accepted and checked
    /// against the address). Errors name the field.
    pub fn from_json(v: &Value) -> Result<CniResult, String> {
        let obj = v.as_object().ok_or("a result must be a JSON object")?;
        let list = |key: &str| -> Result<&[Value], String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(&[]),
                Some(Value::Array(a)) => Ok(a.as_slice()),
                Some(_) => Err(format!("`{key}` must be an array")),
            }
        };
        let mut r = CniResult::default();
        for (n, i) in list("interfaces")?.iter().enumerate() {
            let o = i
                .as_object()
                .ok_or_else(|| format!("interfaces[{n}] must be an object"))?;
            let at = |f: &str| format!("interfaces[{n}].{f}");
            r.interfaces.push(Interface {
                name: req_str(o, "name", &at)?.to_string(),
                mac: opt_str(o, "mac", &at)?,
                mtu: opt_u32(o, "mtu", &at)?,
                sandbox: opt_str(o, "sandbox", &at)?,
                socket_path: opt_str(o, "socketPath", &at)?,
                pci_id: opt_str(o, "pciID", &at)?,
            });
        }
        for (n, ip) in list("ips")?.iter().enumerate() {
            let o = ip
                .as_object()
                .ok_or_else(|| format!("ips[{n}] must be an object"))?;
            let at = |f: &str| format!("ips[{n}].{f}");
            let address: IpNet = req_str(o, "address", &at)?
                .parse()
                .map_err(|_| format!("{} is not an address/prefix", at("address")))?;
            if let Some(fam) = opt_str(o, "version", &at)? {
                let want = if address.addr().is_ipv4() { "4" } else { "6" };
                if fam != want {
                    return Err(format!(
                        "{} is `{fam}` but the address is IPv{want}",
                        at("version")
                    ));
                }
            }
            let gateway = opt_ip(o, "gateway", &at)?;
            let interface = match o.get("interface") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let i = v
                        .as_u64()
                        .ok_or_else(|| format!("{} must be an index", at("interface")))?;
                    if i as usize >= r.interfaces.len() {
                        return Err(format!(
                            "{} = {i} but there are {} interfaces",
                            at("interface"),
                            r.interfaces.len()
                        ));
                    }
                    Some(i as usize)
                }
            };
            r.ips.push(IpConfig {
                address,
                gateway,
                interface,
            });
        }
        for (n, rt) in list("routes")?.iter().enumerate() {
            let o = rt
                .as_object()
                .ok_or_else(|| format!("routes[{n}] must be an object"))?;
            let at = |f: &str| format!("routes[{n}].{f}");
            r.routes.push(Route {
                dst: req_str(o, "dst", &at)?
                    .parse()
                    .map_err(|_| format!("{} is not an address/prefix", at("dst")))?,
                gw: opt_ip(o, "gw", &at)?,
                mtu: opt_u32(o, "mtu", &at)?,
                advmss: opt_u32(o, "advmss", &at)?,
                priority: opt_u32(o, "priority", &at)?,
                table: opt_u32(o, "table", &at)?,
                scope: opt_u32(o, "scope", &at)?,
            });
        }
        if let Some(d) = obj.get("dns").filter(|d| !d.is_null()) {
            r.dns = serde_json::from_value(d.clone()).map_err(|e| format!("dns: {e}"))?;
        }
        Ok(r)
    }

    /// Appends `ours` after a previous plugin's result (a chain where Tabby is not first):
    /// interface indices of `ours` are shifted past the previous interfaces; DNS stays the
    /// previous one unless it was empty.
    pub fn chain(prev: &CniResult, ours: &CniResult) -> CniResult {
        let shift = prev.interfaces.len();
        let mut out = prev.clone();
        out.interfaces.extend(ours.interfaces.iter().cloned());
        out.ips.extend(ours.ips.iter().map(|ip| IpConfig {
            interface: ip.interface.map(|i| i + shift),
            ..ip.clone()
        }));
        out.routes.extend(ours.routes.iter().cloned());
        if out.dns.is_empty() {
            out.dns = ours.dns.clone();
        }
        out
    }
}

fn req_str<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{} is missing or not a string", at(key)))
}

fn opt_str(
    o: &Map<String, Value>,
    key: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{} must be a string", at(key))),
    }
}

fn opt_u32(
    o: &Map<String, Value>,
    key: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<u32>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{} must be an unsigned 32-bit integer", at(key))),
    }
}

fn opt_ip(
    o: &Map<String, Value>,
    key: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<Option<IpAddr>, String> {
    opt_str(o, key, at)?
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{} = `{s}` is not an IP address", at(key)))
        })
        .transpose()
}

/// A whole invocation, validated: what the agent's handler receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub env: Env,
    pub config: NetConf,
}

impl Request {
    /// Validates environment and stdin together. VERSION is not a request (answered locally).
    pub fn parse(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Request, CniError> {
        let env = Env::parse(get)?;
        if env.command == Command::Version {
            return Err(env_error(
                "VERSION is answered by the plugin itself, not forwarded",
            ));
        }
        let config = NetConf::parse(stdin, env.command)?;
        Ok(Request { env, config })
    }

    /// The container ID; present for ADD, CHECK and DEL (checked by `Env::parse`).
    pub fn container_id(&self) -> &str {
        self.env.container_id.as_deref().unwrap_or("")
    }

    /// The interface name inside the container; present for ADD, CHECK and DEL.
    pub fn ifname(&self) -> &str {
        self.env.ifname.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests;
