//! Image formats for rbuild: Docker references, the image config, OCI and Docker manifests and
//! indexes, layer tars, and exporting/importing images as OCI layouts and docker-archives.
//!
//! Everything here sits on the content store of [`rbuild_cache`]: layers, configs and
//! manifests are blobs; an image is a manifest digest, named in the store's image index.
//!
//! - [`reference`](mod@reference): `app` → `docker.io/library/app:latest`, as Docker normalises names.
//! - [`config`]: the image config JSON, byte-compatible with BuildKit's.
//! - [`manifest`]: manifests, indexes, descriptors and media types, serialised canonically.
//! - [`layer`]: directory tree → deterministic layer blob, uncompressed or compressed
//!   (overlayfs whiteouts converted), and layer blob → uncompressed tar stream.
//! - [`compressed_layers`]: layers and images as they leave the store — built layers are
//!   stored uncompressed and compressed (once, remembered in the store) when pushed or
//!   exported.
//! - [`images`]: building images in the store ([`image_from_dir`]) and walking them.
//! - [`oci_layout`] and [`docker_archive`]: export and import.
//!
//! All input from outside (archives, manifests, configs) is treated as hostile: sizes of JSON
//! documents are bounded, tar entry names are checked against an allowlist, and blobs are
//! committed to the store only when they match their digests.

#![deny(missing_docs)]

pub mod compressed_layers;
pub mod config;
pub mod docker_archive;
mod error;
pub mod images;
pub mod import;
pub mod json;
pub mod layer;
pub mod layer_recipe;
pub mod manifest;
pub mod oci_layout;
pub mod reference;
mod tar_read;
mod tar_write;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use compressed_layers::{compressed_image, compressed_layer, LayerCompression};
pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use docker_archive::{
    detect_archive_format, export_docker_archive, import_archive, import_docker_archive,
    ArchiveFormat,
};
pub use error::ImageError;
pub use images::{image_from_dir, image_from_dir_with, image_record, tag_image, write_image};
pub use import::ImportedImage;
pub use layer_recipe::{layer_recipe, use_layer_recipes};
pub use layer::{layer_to_store, open_layer, write_layer, Compression, LayerInfo, LayerOptions};
pub use manifest::{Descriptor, Index, Manifest, ManifestFormat, Platform};
pub use oci_layout::{export_oci_archive, export_oci_dir, import_oci_archive, import_oci_dir};
pub use reference::Reference;
