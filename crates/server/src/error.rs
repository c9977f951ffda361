//! One error type for every HTTP handler, and the one place that decides status codes.
//!
//! Errors leave as JSON `{"error": code, "message": text}`. Bad input gets a
//! precise 4xx with a message a person can act on; internal failures are logged
//! with their detail and reach the client only as a generic message.

use avail_format::FormatError;
use avail_store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use avail_model::ErrorBody;

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// A disk the change needs is full (ENOSPC, EDQUOT); the text names which.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A group holds entitlements or memberships that deleting it would revoke;
    /// the text names them.
    #[error("{0}")]
    GroupInUse(String),
    /// The uploaded package is not a valid package.
    #[error("{0}")]
    InvalidPackage(#[from] FormatError),
    /// A store error.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Anything else: logged, never shown.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An internal error from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Whether an I/O error says a disk or a quota is full. tokio's `File` keeps
/// only the kind of a failed background write, so the kind counts as much as
/// the OS error number.
fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    // ENOSPC, EDQUOT (Linux numbers; the kinds cover other systems).
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28 | 122))
}

impl ApiError {
    /// An I/O error while writing to `what` (e.g. "the content store /srv/avail/content"):
    /// a full disk is a 507 that names it, anything else internal.
    pub(crate) fn io(what: &str, e: std::io::Error) -> Self {
        if is_disk_full(&e) {
            ApiError::InsufficientStorage(format!("no space left in {what}: {e}"))
        } else {
            ApiError::Internal(format!("{what}: {e}"))
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::io("a file system of the server", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Exhaustive on purpose: a new error kind must decide its status here.
        let (status, code, message) = match self {
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            ApiError::GroupInUse(m) => (StatusCode::CONFLICT, "group_in_use", m),
            ApiError::InsufficientStorage(m) => {
                tracing::error!(message = %m, "out of disk space");
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            ApiError::InvalidPackage(FormatError::Io { context, source }) => {
                tracing::error!(%context, %source, "I/O error while reading a package");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_owned(),
                )
            }
            ApiError::InvalidPackage(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_package",
                e.to_string(),
            ),
            ApiError::Store(e) => match e {
                StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", e.to_string()),
                StoreError::Conflict(_) => (StatusCode::CONFLICT, "conflict", e.to_string()),
                StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
                StoreError::Full(_) => {
                    tracing::error!(error = %e, "database out of space");
                    (
                        StatusCode::INSUFFICIENT_STORAGE,
                        "insufficient_storage",
                        e.to_string(),
                    )
                }
                StoreError::Unavailable(_) | StoreError::Schema(_) => {
                    tracing::error!(error = %e, "database unavailable");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the database is unavailable; try again shortly".to_owned(),
                    )
                }
                StoreError::Internal(_) => {
                    tracing::error!(error = %e, "database error");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error".to_owned(),
                    )
                }
            },
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_owned(),
                )
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code.into(),
                message,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(
                    "Bearer realm=\"avail\", Basic realm=\"avail\"",
                ),
            );
        }
        response
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;
