//! The crate's error: one variant per lower part (model, store, runtime),
//! each of which says what went wrong and what to do, and one for the
//! parts above them (the controller's refusals), boxed so that this file
//! names none of them. Every error classifies itself ([`Classify`]);
//! [`Error::kind`] tells the API which status to use.

pub use crate::error_kind::{Classify, ErrorKind};
use crate::model::ModelError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum Error {
    Model(ModelError),
    Store(StoreError),
    Runtime(RuntimeError),
    /// An error of a part above these; see [`Error::downcast_ref`].
    Part(Box<dyn Classify>),
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        Error::Model(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<RuntimeError> for Error {
    fn from(e: RuntimeError) -> Self {
        Error::Runtime(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.classified(), f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Transparent: the wrapped error speaks for itself.
        self.classified().source()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps the error of a part above the model, store and runtime.
    pub fn part(error: impl Classify) -> Self {
        Error::Part(Box::new(error))
    }

    fn classified(&self) -> &dyn Classify {
        match self {
            Error::Model(e) => e,
            Error::Store(e) => e,
            Error::Runtime(e) => e,
            Error::Part(e) => e.as_ref(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.classified().kind()
    }

    /// The current revision, for a conflict on a stale one.
    pub fn current_revision(&self) -> Option<u64> {
        self.classified().current_revision()
    }

    /// The part's error, when it is one of type `T`.
    pub fn downcast_ref<T: Classify>(&self) -> Option<&T> {
        match self {
            Error::Part(e) => (e.as_ref() as &dyn std::error::Error).downcast_ref(),
            _ => None,
        }
    }
}
