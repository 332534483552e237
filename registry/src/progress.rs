//! What pulls and pushes report as they go, for a command to show `docker pull`-like progress.
//! Events may come from several threads at once.

use rbuild_cache::Digest;

/// What a blob is, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// An image config.
    Config,
    /// A layer.
    Layer,
}

/// A step of a pull or push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The reference resolved to this manifest (or index).
    Resolved {
        /// The manifest's or index's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A blob will be transferred (or checked).
    BlobQueued {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// What it is.
        kind: BlobKind,
    },
    /// Bytes of a blob transferred so far.
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The blob was there already (in the store, for a pull; in the repository, for a push).
    BlobExists {
        /// The blob.
        digest: Digest,
    },
    /// The registry linked the blob from another of its repositories.
    BlobMounted {
        /// The blob.
        digest: Digest,
        /// The repository it came from.
        from: String,
    },
    /// The blob was transferred and verified.
    BlobDone {
        /// The blob.
        digest: Digest,
    },
    /// A blob was skipped because it is non-distributable (foreign).
    BlobSkipped {
        /// The blob.
        digest: Digest,
    },
    /// A manifest or index was uploaded.
    ManifestPushed {
        /// The tag or digest it was put under.
        reference: String,
        /// Its digest.
        digest: Digest,
        /// Its size.
        size: u64,
    },
}

/// Where events go.
pub type ProgressSink<'a> = &'a (dyn Fn(Event) + Sync);

/// A sink that drops every event.
pub fn no_progress(_: Event) {}
