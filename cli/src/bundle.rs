//! `rbuild export-bundle IMAGE DIR`: an image of the store as an OCI runtime bundle
//! (`DIR/config.json` + `DIR/rootfs`) that `runc run --bundle DIR ID` runs, written by
//! [`rbuild_runtime::export_bundle`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rbuild_image::reference::Reference;
use rbuild_runtime::bundle::OCI_VERSION;
use rbuild_runtime::{export_bundle, BundleOptions};

use crate::images::{find, human_size, open};

/// The arguments of `rbuild export-bundle`.
#[derive(Args, Debug)]
pub struct ExportBundleArgs {
    /// The image (name or ID prefix).
    pub image: String,
    /// The bundle directory to write; it must be empty or absent.
    pub dir: PathBuf,
    /// The container's hostname.
    #[arg(long, default_value = "rbuild")]
    pub hostname: String,
}

/// Writes the bundle and says what was written.
pub fn export(root: &Path, args: &ExportBundleArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let _lock = store.lock_shared()?;
    let record = find(&store, &args.image)?;
    let opts = BundleOptions {
        hostname: args.hostname.clone(),
    };
    let summary = export_bundle(&store, &record.manifest, &args.dir, &opts).with_context(|| {
        format!(
            "exporting {} as a runtime bundle to {}",
            args.image,
            args.dir.display()
        )
    })?;
    let name = Reference::parse(&record.name)
        .map(|r| r.familiar())
        .unwrap_or(record.name.clone());
    let process = summary.spec.process().clone().unwrap_or_default();
    let command: Vec<String> = process
        .args()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "\"'\\$".contains(c)) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect();
    let user = &summary.user;
    let mut groups = String::new();
    if !user.additional_gids.is_empty() {
        let list: Vec<String> = user.additional_gids.iter().map(u32::to_string).collect();
        groups = format!(", groups {}", list.join(","));
    }
    let id: String = record.config.hex().chars().take(12).collect();
    println!(
        "Exported {name} ({id}) as an OCI runtime bundle in {}",
        summary.dir.display()
    );
    println!(
        "  {}: {} layer{}, {} entries, {}",
        summary.rootfs.display(),
        summary.layers,
        if summary.layers == 1 { "" } else { "s" },
        summary.entries,
        human_size(summary.bytes)
    );
    println!(
        "  {}: runtime spec {OCI_VERSION}; runs {} as uid {}, gid {}{groups}, in {}",
        summary.config_path.display(),
        command.join(" "),
        user.uid,
        user.gid,
        process.cwd().display()
    );
    println!(
        "Run it with: runc run --bundle {} CONTAINER-ID",
        summary.dir.display()
    );
    Ok(())
}
