//! Installing the plugin on a node: the conflist (`10-tabby.conflist`: tabby, then portmap) and
//! the `tabby-cni` binary, both written atomically (temporary file in the same directory, then
//! `rename`), so a runtime never reads half a file or executes half a binary.
//!
//! Owns only the two files it writes. The agent's init container calls [`install`]; nothing
//! here needs a kubeconfig — the shim talks to the local agent only.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::spec::{DEFAULT_AGENT_SOCKET, PLUGIN_TYPE, Version};

/// File name of the network configuration list.
pub const CONFLIST_NAME: &str = "10-tabby.conflist";
/// File name of the plugin binary: the runtime executes the file named by the entry's `type`,
/// so the two are the same string.
pub const BINARY_NAME: &str = PLUGIN_TYPE;
/// Name of the network in the conflist.
pub const NETWORK_NAME: &str = "k8s-pod-network";

/// What goes into the conflist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConflistOptions {
    /// The agent's socket, when not the default.
    pub agent_socket: Option<PathBuf>,
    /// Pod MTU, when not detected by the agent.
    pub mtu: Option<u32>,
    /// Append the reference `portmap` plugin (hostPort support); on by default in the chart.
    pub portmap: bool,
}

/// The conflist as JSON: Tabby first, then `portmap` with SNAT for hairpin traffic.
pub fn conflist(opts: &ConflistOptions) -> Value {
    let mut tabby = json!({"type": PLUGIN_TYPE});
    if let Some(s) = &opts.agent_socket
        && s != Path::new(DEFAULT_AGENT_SOCKET)
    {
        tabby["agentSocket"] = s.display().to_string().into();
    }
    if let Some(m) = opts.mtu {
        tabby["mtu"] = m.into();
    }
    let mut plugins = vec![tabby];
    if opts.portmap {
        plugins
            .push(json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}));
    }
    json!({
        // portmap (containernetworking-plugins 1.x) speaks up to 1.0.0; the runtime calls every
        // plugin in the list's version.
        "cniVersion": if opts.portmap { Version::V1_0_0.as_str() } else { Version::LATEST.as_str() },
        "name": NETWORK_NAME,
        "plugins": plugins,
    })
}

/// Writes `bytes` to `dir/name` atomically with `mode`.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    let target = dir.join(name);
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(target)
}

/// Installs the binary `tabby_cni_bin` into `bin_dir` and the conflist into `conf_dir`.
/// The binary goes first, so a runtime that sees the configuration finds the plugin.
pub fn install(
    tabby_cni_bin: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    opts: &ConflistOptions,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let bin = std::fs::read(tabby_cni_bin)?;
    let bin_path = write_atomically(bin_dir, BINARY_NAME, &bin, 0o755)?;
    let text = serde_json::to_string_pretty(&conflist(opts)).map_err(std::io::Error::other)?;
    let conf_path = write_atomically(conf_dir, CONFLIST_NAME, text.as_bytes(), 0o644)?;
    Ok((bin_path, conf_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Command, NetConf};

    #[test]
    fn conflist_shapes() {
        let c = conflist(&ConflistOptions {
            portmap: true,
            ..ConflistOptions::default()
        });
        assert_eq!(
            c,
            json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
                {"type": "tabby-cni"},
                {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
            ]})
        );
        let c = conflist(&ConflistOptions {
            agent_socket: Some("/run/t/cni.sock".into()),
            mtu: Some(1450),
            portmap: false,
        });
        assert_eq!(
            c,
            json!({"cniVersion": "1.1.0", "name": "k8s-pod-network", "plugins": [
                {"type": "tabby-cni", "agentSocket": "/run/t/cni.sock", "mtu": 1450}
            ]})
        );
        // What the runtime derives for our plugin (name + version copied in) is valid.
        let mut entry = c["plugins"][0].clone();
        entry["name"] = c["name"].clone();
        entry["cniVersion"] = c["cniVersion"].clone();
        let parsed = NetConf::parse(entry.to_string().as_bytes(), Command::Add).unwrap();
        assert_eq!(parsed.mtu, Some(1450));
        // The default socket is not spelled out.
        let c = conflist(&ConflistOptions {
            agent_socket: Some(DEFAULT_AGENT_SOCKET.into()),
            ..ConflistOptions::default()
        });
        assert!(c["plugins"][0].get("agentSocket").is_none());
    }

    #[test]
    fn install_writes_both_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src-bin");
        std::fs::write(&src, b"\x7fELF...").unwrap();
        let (bin, conf) = install(
            &src,
            &dir.path().join("opt/cni/bin"),
            &dir.path().join("etc/cni/net.d"),
            &ConflistOptions {
                portmap: true,
                ..ConflistOptions::default()
            },
        )
        .unwrap();
        assert_eq!(bin.file_name().unwrap(), "tabby-cni");
        assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF...");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&bin), 0o755);
        assert_eq!(conf.file_name().unwrap(), CONFLIST_NAME);
        assert_eq!(mode(&conf), 0o644);
        let v: Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(v["plugins"][1]["type"], "portmap");
        // Re-installing replaces in place and leaves no temporary files behind.
        install(
            &src,
            &dir.path().join("opt/cni/bin"),
            &dir.path().join("etc/cni/net.d"),
            &ConflistOptions::default(),
        )
        .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etc/cni/net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CONFLIST_NAME)]);
    }
}
