//! Switchyard: a release manager and traffic router for zero-downtime
//! deployments of HTTP services.
//!
//! One binary runs several versions of a service side by side and decides,
//! request by request, which version answers. The parts (see `DESIGN.md`):
//!
//! - [`proxy`]: the data plane; forwards client traffic to healthy instances.
//! - [`backend`]: a release and its instances as the data plane sees them,
//!   filled by the runtime, read by the proxy.
//! - [`routing`]: pure code; the compiled, immutable [`routing::RoutingTable`].
//! - [`runtime`]: starts, health-checks, restarts and stops instances.
//! - [`controller`]: the release lifecycle (deploy, assign, kill, rollback).
//! - [`store`]: desired state and revision history (SQLite by default; etcd
//!   for a fleet, with the `etcd` feature).
//! - [`fleet`]: several serves sharing one desired state: membership,
//!   following each other's changes, the leading node.
//! - [`api`]: the admin REST API; [`cli`]: the `switchyard` command.
//! - [`handover`]: a running serve replaced by a new process (self-upgrade).
//! - [`listener`]: how every listening socket is run: connection caps,
//!   header and idle timeouts, accept errors, drain.
//! - [`tls`]: certificates per host name, chosen by SNI; the TLS client
//!   settings serve and the CLI use.
//! - [`model`]: the domain nouns, their validation and state transitions.

pub mod api;
pub mod backend;
pub mod cli;
pub mod config;
pub mod controller;
pub mod error;
pub mod error_kind;
pub mod fleet;
pub mod handover;
pub(crate) mod http1;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod shadow;
pub mod store;
pub mod tls;

pub use error::{Error, Result};
