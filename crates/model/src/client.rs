//! The async management client: sends any [`Endpoint`] to a management server
//! with an administrator's token and gives back the typed answer, or the
//! server's [`ErrorBody`] as an error. `avail admin`, the publishing role's
//! catalog sync and the HA harness share it, so a path or a body cannot differ
//! between them and the router.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::ErrorBody;
use crate::endpoint::{Endpoint, Method};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, or the request could not be sent.
    #[error("cannot reach the management server at {base}")]
    Unreachable {
        /// The server's base URL.
        base: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// The response ended before its body did.
    #[error("the response was cut off")]
    CutOff(#[source] reqwest::Error),
    /// The server refused: its status and its message (the [`ErrorBody`]'s, or
    /// the body itself when it is not one).
    #[error("{message} ({status})")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The [`ErrorBody`] code, when there was one.
        code: Option<String>,
        /// What went wrong, for a person.
        message: String,
    },
    /// A success whose body is not what the endpoint answers with.
    #[error("unexpected response from the server")]
    Unexpected(#[source] serde_json::Error),
    /// A success without the body the endpoint answers with.
    #[error("empty response from the server")]
    Empty,
}

/// A successful answer: its status, its body as sent, and the body decoded
/// (`None` when there was no body).
#[derive(Debug)]
pub struct Reply<T> {
    /// The HTTP status (`200` for a retry that found the thing done, `201` when this call did it).
    pub status: StatusCode,
    /// The body as the server sent it.
    pub raw: Vec<u8>,
    /// The body decoded.
    pub value: Option<T>,
}

impl<T> Reply<T> {
    /// The decoded body, which the endpoint always sends.
    pub fn into_value(self) -> Result<T, ClientError> {
        self.value.ok_or(ClientError::Empty)
    }
}

/// A management server, as one administrator sees it.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ManagementClient {
    /// A client of the server at `base` (`http://host:8080`), authenticating
    /// with `token` when there is one.
    pub fn new(base: &str, token: Option<String>) -> reqwest::Result<Self> {
        Ok(ManagementClient {
            http: reqwest::Client::builder().build()?,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A client of the server at `base` that sends through `http` (a client
    /// with the caller's own timeouts), authenticating with `token`.
    pub fn with_http(http: reqwest::Client, base: &str, token: Option<String>) -> Self {
        ManagementClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request<E: Endpoint>(&self, endpoint: &E) -> reqwest::RequestBuilder {
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let rb = self
            .http
            .request(method, format!("{}{}", self.base, endpoint.path()));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Send `endpoint` with its JSON body.
    pub async fn send<E: Endpoint>(&self, endpoint: &E) -> Result<Reply<E::Response>, ClientError> {
        let mut rb = self.request(endpoint);
        if let Some(body) = endpoint.body() {
            rb = rb.json(body);
        }
        self.finish(rb).await
    }

    /// Send `endpoint` and decode the body it always answers with.
    pub async fn call<E: Endpoint>(&self, endpoint: &E) -> Result<E::Response, ClientError> {
        self.send(endpoint).await?.into_value()
    }

    /// Send `endpoint` with `body` (`len` bytes) as its `application/octet-stream`
    /// body: a package upload.
    pub async fn upload<E: Endpoint>(
        &self,
        endpoint: &E,
        body: reqwest::Body,
        len: u64,
    ) -> Result<Reply<E::Response>, ClientError> {
        let rb = self
            .request(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        self.finish(rb).await
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, ClientError> {
        let response = rb.send().await.map_err(|source| ClientError::Unreachable {
            base: self.base.clone(),
            source,
        })?;
        let status = response.status();
        let raw = response
            .bytes()
            .await
            .map_err(ClientError::CutOff)?
            .to_vec();
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&raw) {
                Ok(e) => (Some(e.error), e.message),
                Err(_) => (None, String::from_utf8_lossy(&raw).into_owned()),
            };
            return Err(ClientError::Refused {
                status,
                code,
                message,
            });
        }
        let value = if raw.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&raw).map_err(ClientError::Unexpected)?)
        };
        Ok(Reply { status, raw, value })
    }
}
