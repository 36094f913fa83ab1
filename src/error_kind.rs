//! How a caller should read an error, decided by the error itself: every
//! part's error type implements [`Classify`], so the crate's [`Error`]
//! (and the admin API that maps it to a status) needs to know no part.
//!
//! [`Error`]: crate::Error

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
    /// Something it depends on (the fleet's store) cannot be reached now;
    /// retry when it is back.
    Unavailable,
}

/// An error that says how to read it.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind;

    /// The current revision, when the error is a conflict on a stale one.
    fn current_revision(&self) -> Option<u64> {
        None
    }
}
