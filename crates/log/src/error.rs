use std::path::PathBuf;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Damage that is not a torn tail: Colony refuses to start rather than guess.
    #[error("{path} is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The decision log and the command log disagree.
    #[error("the decision log does not match the command log: {0}")]
    Mismatch(String),
    /// The data directory was written in another format than this build reads.
    #[error(
        "{path}: this data directory holds data format {found}{note}, and this build of Colony \
         reads format {expected}: start it on a fresh --data directory, or run the Colony \
         version that wrote it"
    )]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
        note: &'static str,
    },
    #[error("record too large: {bytes} bytes (at most {max})")]
    RecordTooLarge { bytes: usize, max: usize },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
