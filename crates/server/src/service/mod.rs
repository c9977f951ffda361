//! The service layer, between the HTTP handlers and the store: operations that
//! span several store calls, or the store and the content store, each one
//! transaction or idempotent so that a retry completes rather than doubles —
//! package import and upgrade with transfer, recovery at start ([`import`]);
//! users and machines with their groups, administrators and their tokens
//! ([`directory`]); finding a package or a connection group by id or name,
//! removing a version with its file, placing a connection group member
//! ([`catalog`]); checking App-V's configuration documents before they are
//! stored ([`configuration`]); the publishing catalog built from one consistent
//! read, and what a user or machine receives from it ([`publishing_catalog`]).
//! Handlers in `management` only turn HTTP into these calls and their results
//! into responses.

pub(crate) mod catalog;
pub(crate) mod configuration;
pub(crate) mod directory;
pub(crate) mod import;
pub(crate) mod publishing_catalog;

use std::path::PathBuf;
use std::sync::Arc;

use avail_store::ManagementStore;

/// What the services work on: the Management DB and the content store.
#[derive(Clone)]
pub(crate) struct Catalog {
    /// The Management DB.
    pub store: Arc<dyn ManagementStore>,
    /// The content store's root directory.
    pub content_root: PathBuf,
}
