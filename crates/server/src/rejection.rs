//! Error responses made outside the handlers, in the one JSON shape every
//! other error has ([`ErrorBody`]).
//!
//! axum answers some requests itself: `404` for a path no route matches, `405`
//! for a method a route lacks, and `text/plain` bodies when an extractor
//! refuses the input (`400` malformed JSON or body, `413` body too large, `415`
//! wrong content type, `422` JSON of the wrong shape, bad path or query
//! parameters). [`fallbacks`] gives every role JSON `404` and `405` handlers;
//! [`json_errors`] rewrites any other `text/plain` error into an [`ErrorBody`]
//! carrying axum's message, keeping its status and other headers.
//!
//! The content role's own answers are left as they are: like nginx or the IIS
//! site App-V reads packages from, its file responses (`404`, `400`, `412`,
//! `416`) carry no body, only a status and validators, and clients act on the
//! status alone; `HEAD` could not carry a body anyway. Only what axum makes for
//! it (an unknown method, `/` itself) is JSON, as on every role.

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ErrorBody;

/// The longest message taken over from a rejection; serde's messages can quote
/// the input.
const MAX_MESSAGE: usize = 1000;

/// A JSON error response.
pub(crate) fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_owned(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// JSON `404` for unknown paths and `405` for unsupported methods, on every
/// route registered so far.
pub(crate) fn fallbacks(router: Router) -> Router {
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no resource at this path",
    )
}

async fn method_not_allowed() -> Response {
    // axum adds the `Allow` header to what this returns.
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this resource does not support this method; see the Allow header",
    )
}

/// The stable code of a status that axum's rejections use.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Middleware: a `text/plain` error response becomes a JSON [`ErrorBody`].
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection bodies are short strings already in memory.
    let text = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    let message = if status.is_server_error() {
        tracing::error!(%status, detail = text, "internal error");
        "internal error".to_owned()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        match text.char_indices().nth(MAX_MESSAGE) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_owned(),
        }
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut json = json_error(status, code(status), message);
    for (name, value) in &parts.headers {
        if !json.headers().contains_key(name) {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }

    async fn call(app: &Router, req: Request) -> (StatusCode, header::HeaderMap, String) {
        let response = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn post_json(body: &'static str, content_type: Option<&str>) -> Request {
        let mut req = Request::post("/named");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn every_framework_error_is_an_error_body() {
        let app = fallbacks(
            Router::new()
                .route("/named", post(|Json(n): Json<Named>| async move { n.name }))
                .route(
                    "/items/{id}",
                    get(|_: axum::extract::Path<u32>| async { "ok" }),
                )
                .route("/plain", get(|| async { "fine" }))
                .route(
                    "/teapot",
                    get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
                ),
        )
        .layer(axum::middleware::from_fn(json_errors));
        let json = Some("application/json");
        let cases = [
            (post_json("{not json", json), 400, "bad_request"),
            (post_json("{}", json), 422, "bad_request"),
            (
                post_json("{\"name\":\"x\"}", None),
                415,
                "unsupported_media_type",
            ),
            (
                Request::get("/items/abc").body(Body::empty()).unwrap(),
                400,
                "bad_request",
            ),
            (
                Request::get("/nowhere").body(Body::empty()).unwrap(),
                404,
                "not_found",
            ),
            (
                Request::delete("/named").body(Body::empty()).unwrap(),
                405,
                "method_not_allowed",
            ),
            (
                Request::get("/teapot").body(Body::empty()).unwrap(),
                418,
                "bad_request",
            ),
        ];
        for (req, status, code) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let (got, headers, body) = call(&app, req).await;
            assert_eq!(got.as_u16(), status, "{what}: {body}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
            let body: ErrorBody = serde_json::from_str(&body).unwrap();
            assert_eq!(body.error, code, "{what}");
            assert!(!body.message.is_empty(), "{what}");
            if status == 405 {
                assert_eq!(headers[header::ALLOW], "POST", "{what}");
            }
        }
        // Successes, and errors that are not text, pass untouched.
        let (status, headers, body) =
            call(&app, Request::get("/plain").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    }
}
