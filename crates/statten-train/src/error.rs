//! The errors of statten-train: what went wrong, by kind, with the message a person reads.
//!
//! Every message names what it is about (the config key, the file, the device, the epoch and
//! step); the variant says which kind of failure it is, for programs that handle them.

use std::fmt;
use std::path::PathBuf;

/// A training, evaluation or run-directory failure.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A run config key or value is invalid, or options contradict each other; the message
    /// names the key.
    Config(String),
    /// A dataset could not be read, or does not fit the model (e.g. more classes than
    /// `model.num_classes`).
    Data(String),
    /// The model could not be built from its config, or reference weights do not fit it.
    Model(statten_core::Error),
    /// A device is unknown, not built in, or not available.
    Device(String),
    /// A checkpoint could not be read or written, or does not fit this run.
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong (the whole message, naming the file).
        message: String,
    },
    /// A run-directory file could not be written, or the directory holds another run.
    RunDir {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong (the whole message, naming the file).
        message: String,
    },
    /// The loss became NaN or infinite; the run stopped before the optimizer step.
    Diverged {
        /// Epoch (0-based).
        epoch: usize,
        /// Step within the epoch (0-based).
        step: usize,
        /// The loss.
        loss: f64,
        /// What the user can do, and which checkpoint holds the run.
        message: String,
    },
    /// The ranks of a multi-process run disagree, or MPI failed.
    Distributed(String),
    /// A plot could not be drawn or written.
    Plot(String),
}

impl Error {
    /// A checkpoint error about `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A run-directory error about `path`.
    pub fn run_dir(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::RunDir {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m)
            | Error::Data(m)
            | Error::Device(m)
            | Error::Distributed(m)
            | Error::Plot(m) => f.write_str(m),
            Error::Model(e) => write!(f, "{e}"),
            Error::Checkpoint { message, .. } | Error::RunDir { message, .. } => {
                f.write_str(message)
            }
            Error::Diverged { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Model(e) => Some(e),
            _ => None,
        }
    }
}

impl From<statten_core::Error> for Error {
    fn from(e: statten_core::Error) -> Self {
        Error::Model(e)
    }
}

impl From<statten_data::DataError> for Error {
    fn from(e: statten_data::DataError) -> Self {
        Error::Data(e.to_string())
    }
}

/// For callers that report errors as text (the CLI).
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

/// Result alias of statten-train.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_display_and_the_kind_is_matchable() {
        let e = Error::checkpoint("/x/last.safetensors", "/x/last.safetensors: truncated");
        assert_eq!(e.to_string(), "/x/last.safetensors: truncated");
        assert!(
            matches!(e, Error::Checkpoint { ref path, .. } if path.ends_with("last.safetensors"))
        );
        let m: Error = statten_core::Error::config("model.depth", "must be at least 1").into();
        assert!(m.to_string().contains("model.depth"));
        assert!(std::error::Error::source(&m).is_some());
        let s: String = Error::Config("train.epochs: bad".into()).into();
        assert_eq!(s, "train.epochs: bad");
    }
}
