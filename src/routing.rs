//! Pure routing: which release answers a request, decided from the host
//! and path alone. No I/O and no locks; a [`RoutingTable`] is compiled from
//! the desired state, never changed, and replaced whole by the controller.

mod table;

pub use table::{Route, RoutingTable, SERVICES_PREFIX, ServiceRoutes};
