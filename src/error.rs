//! The crate's error: one variant per part, each of which says what went
//! wrong and what to do. [`Error::kind`] tells the API which status to use.

use crate::controller::{ControllerError, RegistryError};
use crate::model::ModelError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a caller should read an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; fix it and retry.
    BadRequest,
    /// It names something that does not exist.
    NotFound,
    /// It conflicts with the current state (stale revision, existing release).
    Conflict,
    /// The release could not be made ready (crash loop, deadline, bad command).
    Unprocessable,
    /// Switchyard itself failed.
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Model(e) => match e {
                ModelError::UnknownRelease { .. }
                | ModelError::UnknownService(_)
                | ModelError::UnknownHost { .. } => ErrorKind::NotFound,
                ModelError::ReleaseExists { .. }
                | ModelError::MainHasOthers { .. }
                | ModelError::AlreadyMain { .. }
                | ModelError::HostTaken { .. }
                | ModelError::HostAlreadyHere { .. } => ErrorKind::Conflict,
                _ => ErrorKind::BadRequest,
            },
            Error::Store(StoreError::Conflict { .. } | StoreError::ReleaseMismatch { .. }) => {
                ErrorKind::Conflict
            }
            Error::Store(_) => ErrorKind::Internal,
            Error::Runtime(_) => ErrorKind::Unprocessable,
            Error::Controller(e) => e.kind(),
            Error::Tls(TlsError::NotFound(_)) => ErrorKind::NotFound,
            Error::Tls(TlsError::Store(_)) => ErrorKind::Internal,
            Error::Tls(_) => ErrorKind::BadRequest,
            Error::Registry(e) => e.kind(),
        }
    }

    /// The current revision, for a conflict on a stale one.
    pub fn current_revision(&self) -> Option<u64> {
        match self {
            Error::Store(StoreError::Conflict { current })
            | Error::Controller(ControllerError::StaleRevision { current, .. }) => Some(*current),
            _ => None,
        }
    }
}
