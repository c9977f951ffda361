//! The store's error type: what went wrong in words a caller can act on, never
//! the driver's own types (they stay inside the backends).

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change contradicts what is stored (a duplicate, a different file under a known VersionId…).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached, or went away (failover in progress); retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database's schema is missing, older or newer than this Avail.
    #[error("{0}")]
    Schema(String),
    /// The database has no room left for the change (SQLite's `SQLITE_FULL`,
    /// PostgreSQL's `disk_full`); nothing was written. The text says which database.
    #[error("{0}")]
    Full(String),
    /// Anything else; the text is for logs, not for clients.
    #[error("database error: {0}")]
    Internal(String),
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
