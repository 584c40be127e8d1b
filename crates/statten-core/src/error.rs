//! Errors of the core crate.

use std::fmt;

/// An impossible or inconsistent configuration, or a checkpoint that does not fit the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A configuration value is invalid; `key` names the offending key.
    Config {
        /// The config key (e.g. `model.chunk_size`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint could not be read or does not match the model.
    Checkpoint {
        /// File involved.
        path: String,
        /// What is wrong (naming the tensor key when there is one).
        message: String,
    },
}

impl Error {
    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { key, message } => write!(f, "invalid configuration `{key}`: {message}"),
            Error::Checkpoint { path, message } => write!(f, "checkpoint {path}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result alias of the core crate.
pub type Result<T> = std::result::Result<T, Error>;
