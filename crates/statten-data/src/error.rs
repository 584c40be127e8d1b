//! Errors of the data crate: every one names the file or folder involved.

use std::fmt;
use std::path::{Path, PathBuf};

/// A dataset could not be read.
#[derive(Debug)]
pub struct DataError {
    /// The file or folder involved.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl DataError {
    /// An error about `path`.
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for DataError {}

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;
