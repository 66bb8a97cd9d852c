//! One error type for the whole crate. Every variant says what failed and on which object, so the
//! CLI can print it as the single `tapnet: error: ...` line the README promises.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such {kind}: {name}")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// Bad input from a user or a client: the request changes nothing.
    #[error("{0}")]
    Invalid(String),
    /// A command line the CLI refuses before doing anything (exit status 2, as clap's own).
    #[error("{0}")]
    Usage(String),
    /// The request is well formed but the current state forbids it (object in use, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {errno}")]
    Sys {
        context: String,
        errno: nix::errno::Errno,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    /// Whoever read the command's standard output went away (`tapnet ... | head -1`): the
    /// command stops quietly, as `cat` does, rather than failing.
    #[error("standard output was closed")]
    StdoutClosed,
    /// An error reported by the daemon, carried back to the client as text.
    #[error("{0}")]
    Remote(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn exists(kind: &'static str, name: impl Into<String>) -> Self {
        Error::AlreadyExists {
            kind,
            name: name.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }
}

/// Attach "what we were doing" to I/O and system errors.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Sys {
            context: what(),
            errno,
        })
    }
}
