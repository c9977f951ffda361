//! The directory and the administrators: creating a user or a machine with its
//! groups (one transaction each; a user's creation is idempotent, a machine's
//! credential is issued once), administrators with their password hash and API
//! tokens, and removing an administrator — never the last, which the store
//! checks inside its transaction so that concurrent removals cannot race past it.

use avail_model::api::RegisteredServer;
use avail_model::{Added, rules};

use super::Catalog;
use crate::auth;
use crate::error::{ApiError, ApiResult};

/// A name the API creates, checked by [`rules::check_name`].
pub(crate) fn check_name(kind: &str, name: &str) -> ApiResult<()> {
    rules::check_name(kind, name).map_err(ApiError::BadRequest)
}

/// A label, checked by [`rules::check_label`].
pub(crate) fn check_label(what: &str, value: &str) -> ApiResult<()> {
    rules::check_label(what, value).map_err(ApiError::BadRequest)
}

/// Add a user as a direct member of `groups`; the groups, sorted.
pub(crate) async fn create_user(
    catalog: &Catalog,
    name: &str,
    groups: &[String],
) -> ApiResult<Added<Vec<String>>> {
    check_name("user", name)?;
    Ok(catalog.store.create_user(name, groups).await?)
}

/// Add a machine as a direct member of `groups`; the credential its client
/// uses, which exists only in this answer (the store keeps its hash).
pub(crate) async fn create_machine(
    catalog: &Catalog,
    name: &str,
    groups: &[String],
) -> ApiResult<String> {
    check_name("machine", name)?;
    let credential = auth::new_secret("avail_mch_");
    catalog
        .store
        .create_machine(name, &auth::hash_secret(&credential), groups)
        .await?;
    Ok(credential)
}

/// Register a publishing server; its credential, shown only now.
pub(crate) async fn register_publishing_server(
    catalog: &Catalog,
    name: &str,
) -> ApiResult<RegisteredServer> {
    check_name("publishing server", name)?;
    let credential = auth::new_secret("avail_pub_");
    let server = catalog
        .store
        .register_publishing_server(name, &auth::hash_secret(&credential))
        .await?;
    Ok(RegisteredServer { server, credential })
}

/// Add an administrator, with a password (at least 8 characters, hashed off the
/// async threads) or token-only.
pub(crate) async fn add_administrator(
    catalog: &Catalog,
    name: &str,
    password: Option<String>,
) -> ApiResult<()> {
    check_name("administrator", name)?;
    let hash = match password {
        Some(p) if p.len() < 8 => {
            return Err(ApiError::BadRequest(
                "a password needs at least 8 characters".into(),
            ));
        }
        Some(p) => Some(
            tokio::task::spawn_blocking(move || auth::hash_password(&p))
                .await
                .map_err(ApiError::internal)??,
        ),
        None => None,
    };
    catalog
        .store
        .add_administrator(name, hash.as_deref())
        .await?;
    Ok(())
}

/// Remove an administrator and their tokens; the last one is a conflict.
pub(crate) async fn remove_administrator(catalog: &Catalog, name: &str) -> ApiResult<()> {
    // The store refuses the last one inside its transaction, so concurrent removals cannot race past it.
    Ok(catalog.store.remove_administrator(name).await?)
}

/// A new API token for an administrator, shown only now (the store keeps its hash).
pub(crate) async fn create_token(catalog: &Catalog, admin: &str, label: &str) -> ApiResult<String> {
    check_label("token label", label)?;
    let token = auth::new_secret("avail_adm_");
    catalog
        .store
        .add_api_token(admin, &auth::hash_secret(&token), label)
        .await?;
    Ok(token)
}
