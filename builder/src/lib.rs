//! The build driver: runs what the solver planned — file operations through the executor,
//! `RUN` steps through the executor's sandbox, layers and image configs through the image crate —
//! and exports the result.

pub mod base_image;
pub mod build;
pub mod cachekey;
pub mod config;
mod copy_reuse;
pub mod error;
pub mod export;
pub mod fileops;
pub mod layers;
pub mod overlay;
pub mod remote_cache;
pub mod run;

pub use config::StageConfig;
pub use error::BuildError;
