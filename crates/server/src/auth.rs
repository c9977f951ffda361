//! Who is calling: administrator API tokens (Bearer) and passwords (Basic,
//! argon2), machine and publishing-server credentials.
//!
//! Secrets Avail issues (API tokens, machine and publishing-server credentials)
//! are 256 random bits, so a SHA-256 of them is a safe lookup key and the
//! database never holds a usable secret. Passwords people choose are hashed
//! with argon2 instead.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::management::AppState;

/// A new secret with a readable prefix (`avail_adm_…`, `avail_mch_…`, `avail_pub_…`).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The lookup key stored for an issued secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// An argon2id hash of a password, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Proof that the caller is an administrator: the only principal that may
/// change anything. Their name goes into the request's log span.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

fn admin(name: &str) -> Admin {
    tracing::Span::current().record("admin", name);
    Admin
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing credentials: send `Authorization: Bearer <token>` or Basic".into(),
                )
            })?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let (scheme, value) = header
            .split_once(' ')
            .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let store = &state.store;
        if scheme.eq_ignore_ascii_case("bearer") {
            let hash = hash_secret(value.trim());
            if let Some(name) = store.administrator_by_token(&hash).await? {
                return Ok(admin(&name));
            }
            if store.machine_by_credential(&hash).await?.is_some() {
                return Err(ApiError::Forbidden(
                    "machines and their users may not change anything".into(),
                ));
            }
            if store
                .publishing_server_by_credential(&hash)
                .await?
                .is_some()
            {
                return Err(ApiError::Forbidden(
                    "a publishing server may only read the catalog".into(),
                ));
            }
            Err(ApiError::Unauthorized("unknown or revoked token".into()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
            let (name, password) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
            let hash = store.administrator_password_hash(name).await?;
            let (password, name) = (password.to_owned(), name.to_owned());
            // argon2 is deliberately slow: keep it off the async workers. An unknown
            // name still costs a hash, so timing does not tell names apart.
            let ok = tokio::task::spawn_blocking(move || match hash {
                Some(hash) => verify_password(&password, &hash),
                None => {
                    let _ = hash_password(&password);
                    false
                }
            })
            .await
            .map_err(ApiError::internal)?;
            if ok {
                Ok(admin(&name))
            } else {
                Err(ApiError::Unauthorized(
                    "wrong administrator name or password".into(),
                ))
            }
        } else {
            Err(ApiError::Unauthorized(format!(
                "unsupported authorization scheme {scheme}"
            )))
        }
    }
}
