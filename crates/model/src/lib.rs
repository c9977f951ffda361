//! Avail's shared vocabulary, free of any database driver: what the Management
//! and Reporting DBs hold ([`domain`]), the ids that name those things
//! ([`ids`]), the management API's requests and responses ([`api`]) with the
//! method and path of each ([`endpoint`]), the JSON error body every role sends
//! ([`ErrorBody`]), the domain rules both database backends and the HTTP layer
//! apply ([`rules`]), and the publishing catalog with its resolution of what a
//! user or machine receives ([`catalog`]) and the changes between two catalogs
//! that a catalog sync sends ([`catalog_delta`]), rendered as MS-VAPR's
//! publishing document ([`publishing`]). With the `client` feature, the async
//! [`ManagementClient`](client::ManagementClient) that sends those requests.
//!
//! `avail-store`, `avail-server`, the `avail` binary and the coming client
//! daemon depend on this crate; it depends on no database driver, so a client
//! can speak the API without linking SQLite or PostgreSQL (`scripts/test`
//! checks that with `cargo tree`).

pub mod api;
pub mod catalog;
pub mod catalog_delta;
#[cfg(feature = "client")]
pub mod client;
pub mod domain;
pub mod endpoint;
mod error;
pub mod ids;
pub mod publishing;
pub mod rules;

pub use domain::*;
pub use error::ErrorBody;
pub use ids::{ConnectionGroupId, PackageId, VersionId};
