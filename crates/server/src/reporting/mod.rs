//! The reporting role: MS-VAPR SetReport (`POST /`, §3.2) into the Reporting DB.
//!
//! Clients post anonymously, as they do to App-V's reporting server: the role
//! asks for no credential (put it behind a network boundary or TLS as needed).
//! Reports in flight are limited and have a deadline (`reporting.*` in the
//! configuration, applied by the role framework), since each holds its body in
//! memory. A body is bounded (`reporting.max_body_bytes`, `413` past it), decoded
//! (UTF-16 with or without a BOM, as Windows clients send it, or UTF-8),
//! parsed and checked against the schema (`report`; `400` naming the element
//! at fault), and handed as a [`ClientReport`] to the [`batch`] writer, which
//! stores the reports queued at the time in one transaction (group commit);
//! `200` comes only once the report's transaction has durably committed, and
//! never App-V's `307`, which clients take for success. A full queue gets
//! `503` with `Retry-After`. A report sent again is counted once: its id is
//! the client's (`Avail-Report-Id: <uuid>`) when given, else derived from the
//! SHA-256 of the decoded body, so a retried body maps to the stored report
//! whatever encoding it came in.

mod batch;
mod report;

use std::net::SocketAddr;
use std::sync::Arc;

use avail_model::domain::ClientReport;
use avail_store::ReportingStore;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use batch::{Batcher, Refused};

/// The header an Avail client names its report id in.
pub(crate) const REPORT_ID_HEADER: &str = "avail-report-id";

/// What the reporting handler reaches.
#[derive(Clone)]
struct ReportingState {
    batcher: Batcher,
}

/// The reporting router: `POST /` with bodies up to `max_body_bytes`. Starts
/// the [`batch`] writers on the current runtime.
pub(crate) fn router(store: Arc<dyn ReportingStore>, max_body_bytes: usize) -> axum::Router {
    let batcher = Batcher::start(store, batch::WRITERS, batch::MAX_BATCH, batch::QUEUE);
    axum::Router::new()
        .route("/", post(set_report))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(ReportingState { batcher })
}

/// The report id of `text`, a decoded body, when the client names none: a
/// UUID made of the first 16 bytes of its SHA-256.
fn derived_id(text: &str) -> Uuid {
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

async fn set_report(
    State(state): State<ReportingState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = report::decode(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let parsed = report::parse(&text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let id = match headers.get(REPORT_ID_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
            .ok_or_else(|| ApiError::BadRequest(format!("{REPORT_ID_HEADER} must be a UUID")))?,
        None => derived_id(&text),
    };
    let submitted = state
        .batcher
        .submit(ClientReport {
            id,
            received_at: chrono::Utc::now(),
            source_host: peer.ip().to_string(),
            body: text,
            client: parsed.client,
            packages: parsed.packages,
            usage: parsed.usage,
        })
        .await;
    match submitted {
        Ok(()) => {
            tracing::debug!(report = %id, "report stored");
            Ok(StatusCode::OK.into_response())
        }
        Err(Refused::Store(e)) => Err(e.into()),
        Err(Refused::Busy) => {
            // Debug only: under overload a line per refused report would flood the log.
            tracing::debug!(report = %id, "report queue full");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(ErrorBody {
                    error: "unavailable".into(),
                    message: "too many reports waiting to be stored; try again shortly".into(),
                }),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
    }
}
