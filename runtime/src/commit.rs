//! `rbuild commit`: a container's changes as a new image — its image's layers plus one layer
//! made from the container's upper dir, its image's config with a history entry, tagged in the
//! store's image index.
//!
//! The upper dir is never moved or changed: it is first copied into the store (written as a
//! layer tar and unpacked again, which keeps owners, modes, times, xattrs, overlay whiteouts
//! and opaque directories exactly), the mount points a running container's sandbox created are
//! taken out of the copy, and the copy becomes the layer through the builder's
//! [`commit_layer`] (blob and snapshot). A running container is not paused: files it changes
//! while the copy is made may be caught half-way, as with `docker commit --pause=false`.

use std::path::Path;

use rbuild_builder::layers::{base_layers, commit_layer, StageLayer};
use rbuild_cache::{Digest, ImageRecord, Store};
use rbuild_executor::sandbox::{remove_stubs, Stubs};
use rbuild_fsutil::{extract_tar, ExtractOptions, Root, WhiteoutMode};
use rbuild_image::config::format_rfc3339_nano;
use rbuild_image::images::{read_config, resolve_manifest};
use rbuild_image::manifest::media_types;
use rbuild_image::reference::Reference;
use rbuild_image::{
    tag_image, write_image, write_layer, Compression, Descriptor, History, LayerOptions,
    ManifestFormat,
};

use crate::container_error::ContainerError;
use crate::containers::{now, Container};

/// Copies the overlay upper dir `upper` into `dest` (an empty directory) exactly, by streaming
/// it as an uncompressed layer tar into an extraction that recreates overlay whiteouts.
fn copy_upper(upper: &Path, dest: &Path) -> Result<(), ContainerError> {
    let root =
        Root::open(dest).map_err(ContainerError::fs(format!("opening {}", dest.display())))?;
    let (reader, writer) = std::io::pipe().map_err(ContainerError::io("pipe"))?;
    let opts = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let result = write_layer(upper, &writer, &opts);
            drop(writer);
            result
        });
        let extract = ExtractOptions {
            whiteouts: WhiteoutMode::ToOverlay,
            same_owner: true,
            xattrs: true,
            ..ExtractOptions::default()
        };
        let extracted = extract_tar(&reader, &root, &extract)
            .map(|_| ())
            .map_err(ContainerError::fs("copying the container's changes"));
        // Whatever the tar reader left (padding) must be read for the writer to finish.
        let _ = std::io::copy(&mut &reader, &mut std::io::sink());
        drop(reader);
        let written = producer
            .join()
            .map_err(|_| ContainerError::Io {
                what: "copying the container's changes".into(),
                source: std::io::Error::other("the layer writer panicked"),
            })?
            .map(|_| ());
        written.map_err(ContainerError::from)?;
        extracted
    })
}

/// Commits `c`'s changes as a new image named `reference`; returns its record.
pub fn commit(
    store: &Store,
    c: &Container,
    reference: &str,
    comment: &str,
) -> Result<ImageRecord, ContainerError> {
    let name = Reference::parse(reference)?.to_string();
    let _lock = store.lock_shared()?;
    let digest = Digest::parse(&c.spec.image_manifest)?;
    let (_, manifest) =
        resolve_manifest(store, &Descriptor::new(&c.spec.image_media_type, digest, 0))?;
    let mut config = read_config(store, &manifest.config.digest)?;
    let layers: Vec<StageLayer> = base_layers(store, &manifest.layers, &config.rootfs.diff_ids)?;
    let format = if manifest.media_type == media_types::DOCKER_MANIFEST {
        ManifestFormat::Docker
    } else {
        ManifestFormat::Oci
    };
    let work = store.work_dir("commit")?;
    let copy = work.path().join("layer");
    std::fs::create_dir(&copy)
        .map_err(ContainerError::io(format!("creating {}", copy.display())))?;
    copy_upper(&c.upper(), &copy)?;
    // A running container's mount points are the sandbox's, not changes.
    let stubs = Stubs {
        created: c.state.stubs.clone(),
        parents: c.state.stub_parents.clone(),
    };
    let copy_root =
        Root::open(&copy).map_err(ContainerError::fs(format!("opening {}", copy.display())))?;
    remove_stubs(&copy_root, &stubs)?;
    drop(copy_root);
    let layer_opts = LayerOptions {
        format,
        ..LayerOptions::default()
    };
    let layer = commit_layer(store, &copy, layers.last(), &layer_opts)?;
    let created = format_rfc3339_nano(now(), 0);
    config.created = Some(created.clone());
    config.history.push(History {
        created: Some(created),
        created_by: c.spec.command.join(" "),
        comment: comment.to_string(),
        ..History::default()
    });
    let mut infos: Vec<_> = layers.iter().map(StageLayer::info).collect();
    infos.push(layer.info());
    let desc = write_image(store, config, &infos, format)?;
    Ok(tag_image(store, &name, &desc.digest)?)
}
