//! The directory and the administrators: creating a user or a machine with its
//! groups (one transaction each; a user's creation is idempotent, a machine's
//! credential is issued once), administrators with their password hash and API
//! tokens, and removing an administrator — never the last, which the store
//! checks inside its transaction so that concurrent removals cannot race past it;
//! deleting a group only when it holds nothing, or by force.

use avail_model::api::RegisteredServer;
use avail_model::{Added, GroupHoldings, rules};

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

/// Delete group `name`. Without `force`, a group that holds entitlements (to a
/// package version or a connection group) or memberships (it has members, or is
/// a member of another group) is refused with `group_in_use`, naming what
/// deleting it would revoke; with `force` all of that goes with it. The store
/// decides inside its transaction, so nothing granted meanwhile is revoked
/// unasked.
pub(crate) async fn delete_group(catalog: &Catalog, name: &str, force: bool) -> ApiResult<()> {
    let deletion = catalog.store.delete_group(name, force).await?;
    if deletion.deleted {
        return Ok(());
    }
    Err(ApiError::GroupInUse(format!(
        "group {name} {}; delete it with --force to revoke them",
        describe(&deletion.holdings)
    )))
}

/// What a group holds, as the tail of a sentence about it: "is entitled to
/// Editor 2.0 and connection group Suite, has 2 members (alice, pc1), and is a
/// member of group labs".
fn describe(h: &GroupHoldings) -> String {
    let entitled: Vec<String> = h
        .packages
        .iter()
        .cloned()
        .chain(
            h.connection_groups
                .iter()
                .map(|c| format!("connection group {c}")),
        )
        .collect();
    let mut held = Vec::new();
    if !entitled.is_empty() {
        held.push(format!("is entitled to {}", and_list(&entitled)));
    }
    if !h.members.is_empty() {
        let names: Vec<&str> = h.members.iter().map(|m| m.name()).collect();
        held.push(format!(
            "has {} member{} ({})",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    if !h.member_of.is_empty() {
        held.push(format!(
            "is a member of group{} {}",
            if h.member_of.len() == 1 { "" } else { "s" },
            and_list(&h.member_of)
        ));
    }
    match held.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
