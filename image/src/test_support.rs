//! Fixtures for tests in this and other crates (feature `test-support`): a small sample
//! directory tree and a named image built from it in a store.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use rbuild_cache::{Digest, Store};

use crate::config::ImageConfig;
use crate::error::ImageError;
use crate::images::{image_from_dir, tag_image};
use crate::manifest::Platform;

/// Writes a small tree into `dir`: `bin/hello` (0755 script), `etc/greeting`, `etc/empty`,
/// the symlink `etc/link -> greeting`, and the empty directory `var/lib/app`.
pub fn write_sample_tree(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("etc"))?;
    fs::create_dir_all(dir.join("var/lib/app"))?;
    fs::write(dir.join("bin/hello"), "#!/bin/sh\necho hello\n")?;
    fs::set_permissions(dir.join("bin/hello"), fs::Permissions::from_mode(0o755))?;
    fs::write(dir.join("etc/greeting"), "hello from rbuild\n")?;
    fs::write(dir.join("etc/empty"), "")?;
    symlink("greeting", dir.join("etc/link"))?;
    Ok(())
}

/// Builds an image for the host platform from [`write_sample_tree`] (written under
/// `work_dir/rootfs`), with `Cmd ["/bin/hello"]`, fixed `created` time, and names it `name`.
pub fn sample_image(store: &Store, work_dir: &Path, name: &str) -> Result<Digest, ImageError> {
    let rootfs = work_dir.join("rootfs");
    write_sample_tree(&rootfs).map_err(|e| ImageError::io(rootfs.display().to_string(), e))?;
    let host = Platform::host();
    let mut config = ImageConfig::new(&host.architecture, &host.os);
    config.variant = host.variant;
    config.created = Some("2024-01-01T00:00:00Z".to_owned());
    config.config.cmd = vec!["/bin/hello".to_owned()];
    config.config.env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    let digest = image_from_dir(store, &rootfs, config)?;
    tag_image(store, name, &digest)?;
    Ok(digest)
}
