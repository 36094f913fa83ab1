//! Pure routing: which release answers a request, decided from what the
//! request carries. No I/O and no locks; a [`RoutingTable`] is compiled
//! from the desired state, never changed, and replaced whole by the
//! controller.

mod api_version;
mod bucket;
mod matcher;
mod policy;
mod table;

pub use api_version::{ApiRouting, Asked, Served};
pub use bucket::{bucket, client_token};
pub use matcher::RequestView;
pub use policy::{CompiledPolicy, Decision, FixedResponse, Target};
pub use table::{Route, RoutingTable, SERVICES_PREFIX, ServiceRoutes};
