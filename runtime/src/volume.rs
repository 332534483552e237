//! Named volumes: directories in the store whose data outlives the containers that mount them
//! (`rbuild volume create|ls|rm|inspect`, `-v NAME:/dst`).
//!
//! ```text
//! <store root>/volumes/<name>/
//!   _data/         what containers see (0755, root), bound at the mount target
//!   volume.json    name, creation time, whether it is anonymous
//! ```
//!
//! Names follow Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), so a name is always one plain
//! path component. Anonymous volumes (`-v /dst`, an image's `VOLUME`) get 64 random hex digits
//! as their name. A volume mounted by any container (running or not) cannot be removed.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rbuild_cache::Store;
use serde::{Deserialize, Serialize};

use crate::container_error::ContainerError;
use crate::containers::{
    now, private_dir, random_hex, read_json, validate_name, write_json, Containers, MountSpec,
};

/// The directory under the store root holding the volumes.
pub const VOLUMES_DIR: &str = "volumes";

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// When it was created, seconds since the epoch.
    pub created: i64,
    /// Made for one container (`-v /dst`, `VOLUME`).
    pub anonymous: bool,
    /// The directory containers see.
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// The volumes of one store.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// The volumes of `store` (the directory is created on first use).
    pub fn open(store: &Store) -> Result<Volumes, ContainerError> {
        let dir = store.root().join(VOLUMES_DIR);
        private_dir(&dir)?;
        Ok(Volumes { dir })
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// Creates the volume `name` (or returns it when it exists, as `docker volume create`
    /// does). Without a name, an anonymous volume with a random one.
    pub fn create(&self, name: Option<&str>) -> Result<Volume, ContainerError> {
        let (name, anonymous) = match name {
            Some(n) => {
                validate_name("volume", n)?;
                (n.to_string(), false)
            }
            None => (random_hex(32)?, true),
        };
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        // Made under a temporary name and renamed, so that a volume is complete or absent.
        let tmp = self
            .dir
            .join(format!(".new-{}-{}", std::process::id(), random_hex(8)?));
        private_dir(&tmp)?;
        let made = (|| {
            let data = tmp.join("_data");
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .map_err(ContainerError::io(format!("creating {}", data.display())))?;
            let volume = Volume {
                name: name.clone(),
                created: now(),
                anonymous,
                mountpoint: PathBuf::new(),
            };
            write_json(&tmp.join("volume.json"), &volume)?;
            match fs::rename(&tmp, self.dir.join(&name)) {
                Ok(()) => Ok(()),
                // Made by someone else meanwhile: theirs wins.
                Err(_) if self.meta_path(&name).exists() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(ContainerError::io(format!("creating volume {name}"))(e)),
            }
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        made?;
        self.get(&name)
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, ContainerError> {
        validate_name("volume", name)?;
        let meta = self.meta_path(name);
        if !meta.exists() {
            return Err(ContainerError::NoSuchVolume(name.to_string()));
        }
        let mut v: Volume = read_json(&meta)?;
        v.mountpoint = self.dir.join(name).join("_data");
        Ok(v)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, ContainerError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(ContainerError::io(format!(
            "reading {}",
            self.dir.display()
        )))?;
        for entry in entries {
            let entry = entry.map_err(ContainerError::io(format!(
                "reading {}",
                self.dir.display()
            )))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_name("volume", &name).is_err() {
                continue;
            }
            match self.get(&name) {
                Ok(v) => out.push(v),
                Err(ContainerError::NoSuchVolume(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the volume `name` and its data, unless a container mounts it.
    pub fn remove(&self, name: &str, containers: &Containers) -> Result<(), ContainerError> {
        let _lock = containers.lock()?;
        self.get(name)?;
        for c in containers.list()? {
            let uses = c
                .spec
                .mounts
                .iter()
                .any(|m| matches!(m, MountSpec::Volume { name: n, .. } if n == name));
            if uses {
                return Err(ContainerError::VolumeInUse {
                    volume: name.to_string(),
                    container: c.spec.name.clone(),
                });
            }
        }
        self.delete(name)
    }

    /// Removes a volume's directory (callers checked that nothing uses it).
    pub(crate) fn delete(&self, name: &str) -> Result<(), ContainerError> {
        validate_name("volume", name)?;
        let dir = self.dir.join(name);
        let trash = self.dir.join(format!(
            ".removing-{}-{}",
            std::process::id(),
            random_hex(8)?
        ));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ContainerError::io(format!("removing volume {name}"))(e)),
        }
        // std's remove_dir_all never follows symlinks (containers wrote these files).
        fs::remove_dir_all(&trash).map_err(ContainerError::io(format!("removing volume {name}")))
    }
}

impl Volume {
    /// `docker volume inspect`'s fields as JSON.
    pub fn inspect_json(&self) -> serde_json::Value {
        serde_json::json!({
            "CreatedAt": rbuild_image::config::format_rfc3339_nano(self.created, 0),
            "Driver": "local",
            "Labels": serde_json::Value::Null,
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": serde_json::Value::Null,
            "Scope": "local",
        })
    }

    /// Whether the data directory is empty.
    pub(crate) fn is_empty(&self) -> Result<bool, ContainerError> {
        is_empty_dir(&self.mountpoint)
    }
}

pub(crate) fn is_empty_dir(dir: &Path) -> Result<bool, ContainerError> {
    Ok(fs::read_dir(dir)
        .map_err(ContainerError::io(format!("reading {}", dir.display())))?
        .next()
        .is_none())
}
