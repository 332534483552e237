//! The build driver: runs what the solver planned — file operations through the executor,
//! layers and image configs through the image crate — and exports the result. This first part
//! owns how instructions change an image's config and history.

pub mod build;
pub mod config;
pub mod error;
pub mod export;
pub mod fileops;
pub mod layers;
pub mod overlay;

pub use config::StageConfig;
pub use error::BuildError;
