//! Writes the CRD manifests to `charts/tabby/crds/<plural>.tabby.dev.yaml`.
//!
//! Usage: `cargo run -p tabby-api --bin crdgen [-- OUT_DIR]` (default: the chart in this
//! workspace). Files named `*.tabby.dev.yaml` that no CRD produces any more are removed.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/tabby/crds"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let files = tabby_api::crdgen::render_all()?;
    for entry in std::fs::read_dir(&out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".tabby.dev.yaml") && !files.iter().any(|(f, _)| f == name) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    for (name, contents) in files {
        let path = out.join(&name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
