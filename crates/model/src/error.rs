//! The JSON body of every error response, from every role: a stable code for
//! programs and a message for people.

use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`not_found`, `conflict`, …).
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}
