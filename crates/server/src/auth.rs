//! Who is calling: administrator API tokens (Bearer) and passwords (Basic,
//! argon2), machine and publishing-server credentials.
//!
//! Secrets Avail issues (API tokens, machine and publishing-server credentials)
//! are 256 random bits, so a SHA-256 of them is a safe lookup key and the
//! database never holds a usable secret. Passwords people choose are hashed
//! with argon2 instead.
//!
//! argon2 is slow and memory-hard on purpose (19 MiB and tens of milliseconds a
//! check), so password checks are what a flood of wrong Basic credentials
//! would exhaust the server with. [`PasswordGuard`] bounds them: checks run on
//! a few threads of their own, one per core, so at most that many 19 MiB
//! buffers ever exist (on tokio's blocking pool each of its hundreds of
//! threads would end up keeping one in its allocator arena: gigabytes); a few
//! more callers may wait for a turn for a few seconds and the rest get `503`
//! at once, before any database lookup; and failed attempts are rate-limited
//! per source address and per administrator name, so after a handful of
//! failures in a minute a caller gets `429` with `Retry-After` without argon2
//! running at all. Bearer tokens never touch argon2 and stay fast throughout.
//!
//! The extractors ([`Admin`], [`Machine`]) work on any role whose state gives
//! an [`Authenticator`] (`FromRef`): it answers through a [`CredentialLookup`]
//! trait object, backed by the Management DB today ([`Authenticator::from_store`])
//! and by the catalog a publishing node holds later, so that a role without a
//! database authenticates from the data it has.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::management::AppState;

/// Where the extractors look credentials up: the hashes of issued secrets
/// ([`hash_secret`]) and administrators' password hashes. A source that has no
/// such principals (a publishing node's catalog has no administrators) answers
/// `None`.
#[async_trait::async_trait]
pub trait CredentialLookup: Send + Sync {
    /// The administrator an API token hash belongs to.
    async fn administrator_by_token(&self, token_hash: &str) -> Result<Option<String>, ApiError>;
    /// The password hash of an administrator, if they exist and have one.
    async fn administrator_password_hash(&self, name: &str) -> Result<Option<String>, ApiError>;
    /// The machine a credential hash belongs to.
    async fn machine_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<String>, ApiError>;
    /// The publishing server a credential hash belongs to.
    async fn publishing_server_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<String>, ApiError>;
}

/// The Management DB as a [`CredentialLookup`].
struct StoreCredentials(Arc<dyn avail_store::ManagementStore>);

#[async_trait::async_trait]
impl CredentialLookup for StoreCredentials {
    async fn administrator_by_token(&self, token_hash: &str) -> Result<Option<String>, ApiError> {
        Ok(self.0.administrator_by_token(token_hash).await?)
    }

    async fn administrator_password_hash(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.0.administrator_password_hash(name).await?)
    }

    async fn machine_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(self.0.machine_by_credential(credential_hash).await?)
    }

    async fn publishing_server_by_credential(
        &self,
        credential_hash: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(self
            .0
            .publishing_server_by_credential(credential_hash)
            .await?
            .map(|server| server.name))
    }
}

/// What the extractors authenticate with; a role's state provides it through
/// `FromRef`. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator(Arc<dyn CredentialLookup>);

impl Authenticator {
    /// Credentials from `lookup`.
    pub fn new(lookup: Arc<dyn CredentialLookup>) -> Self {
        Authenticator(lookup)
    }

    /// Credentials from the Management DB.
    pub fn from_store(store: Arc<dyn avail_store::ManagementStore>) -> Self {
        Authenticator::new(Arc::new(StoreCredentials(store)))
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        Authenticator::from_store(state.store.clone())
    }
}

/// The `Authorization` header split into its scheme and value.
fn authorization(parts: &Parts, missing: &str) -> Result<(String, String), ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized(missing.to_owned()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, value) = header
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".into()))?;
    Ok((scheme.to_owned(), value.trim().to_owned()))
}

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

/// Whether `password` matches `hash` (a PHC string), computed in `memory`, which
/// is grown to the hash's memory cost and kept for the next check: the 19 MiB
/// of a check are allocated once per thread instead of once per check.
fn verify_password(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let Ok(version) = hash
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let blocks = params.block_count();
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .is_ok()
        // Output compares in constant time.
        && Output::new(out).is_ok_and(|computed| computed == expected)
}

thread_local! {
    /// argon2's memory on a password-check thread.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How long a password check may wait for a turn before the caller gets `503`.
const CHECK_WAIT: Duration = Duration::from_secs(5);
/// Callers that may wait for a turn, per core; more get `503` at once, so that
/// password checks cannot hold every request slot of the role.
const WAITING_PER_CORE: usize = 16;
/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Sources and names remembered by the limiter, each; beyond it the entries
/// closest to expiring are forgotten first.
const TALLY_CAP: usize = 10_000;

/// Bounds what password checks cost (see the module documentation). Cheap to
/// clone; one per management role, reached by the extractor as a request
/// extension.
#[derive(Clone)]
pub struct PasswordGuard(Arc<Guard>);

struct Guard {
    /// Where checks run: as many threads as `permits` has permits.
    threads: rayon::ThreadPool,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait: Duration,
    /// `WINDOW` divided by the failures allowed in it.
    interval: Duration,
    epoch: Instant,
    names: RandomState,
    tallies: Mutex<Tallies>,
    /// What a password is checked against when the name is unknown, so that
    /// the check costs the same.
    decoy: String,
}

struct Tallies {
    sources: Tally<IpAddr>,
    names: Tally<u64>,
}

/// Failed attempts per key as a generic cell rate: each failure pushes the
/// key's `debt` (a time since the guard's epoch) one `interval` further; the
/// key may try again while its debt ends less than `WINDOW - interval` from now.
/// So `WINDOW / interval` failures in a row are allowed, then one more every
/// `interval`. A key whose debt has run out is forgotten.
struct Tally<K> {
    debt: HashMap<K, Duration>,
    cap: usize,
}

impl<K: Hash + Eq + Copy> Tally<K> {
    fn new(cap: usize) -> Self {
        Tally {
            debt: HashMap::new(),
            cap,
        }
    }

    /// How long `key` must wait before its next attempt, if it must.
    fn retry_after(&self, key: &K, now: Duration, interval: Duration) -> Option<Duration> {
        let debt = *self.debt.get(key)?;
        let allowed_at = debt.saturating_sub(WINDOW.saturating_sub(interval));
        (allowed_at > now).then(|| allowed_at - now)
    }

    fn charge(&mut self, key: K, now: Duration, interval: Duration) {
        if self.debt.len() >= self.cap && !self.debt.contains_key(&key) {
            self.debt.retain(|_, debt| *debt > now);
            if self.debt.len() >= self.cap {
                // Full of live entries: forget the one closest to paid off.
                let oldest = self.debt.iter().min_by_key(|(_, d)| **d).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    self.debt.remove(&oldest);
                }
            }
        }
        let debt = self.debt.entry(key).or_insert(now);
        *debt = (*debt).max(now) + interval;
    }

    fn refund(&mut self, key: &K, now: Duration, interval: Duration) {
        if let Some(debt) = self.debt.get_mut(key) {
            *debt = debt.saturating_sub(interval);
            if *debt <= now {
                self.debt.remove(key);
            }
        }
    }
}

/// The address a source is counted under: IPv4 as is, IPv6 by its /64 (what
/// one host usually holds).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (!0u128 << 64))),
        },
    }
}

/// A password attempt counted against its source and name: charged as a
/// failure up front, so that concurrent attempts cannot all slip under the
/// limit, and refunded if the password was right or never checked.
struct Attempt {
    guard: PasswordGuard,
    source: Option<IpAddr>,
    name: u64,
}

impl Attempt {
    fn refund(self) {
        let g = &self.guard.0;
        let now = g.epoch.elapsed();
        let mut tallies = g.tallies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = &self.source {
            tallies.sources.refund(source, now, g.interval);
        }
        tallies.names.refund(&self.name, now, g.interval);
    }
}

impl PasswordGuard {
    /// One check at a time per core; `failures_per_minute` (at least 1)
    /// failed attempts per source and per name before `429`.
    pub fn new(failures_per_minute: u32) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        PasswordGuard::with_limits(
            cores,
            cores * WAITING_PER_CORE,
            CHECK_WAIT,
            failures_per_minute,
        )
    }

    fn with_limits(
        permits: usize,
        max_waiting: usize,
        wait: Duration,
        failures_per_minute: u32,
    ) -> std::io::Result<Self> {
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(permits)
            .thread_name(|i| format!("avail-argon2-{i}"))
            // Rather than abort the process; the caller then gets a 500.
            .panic_handler(|_| tracing::error!("a password check panicked"))
            .build()
            .map_err(std::io::Error::other)?;
        let decoy = hash_password(&new_secret("decoy_")).map_err(std::io::Error::other)?;
        Ok(PasswordGuard(Arc::new(Guard {
            threads,
            decoy,
            permits: Arc::new(Semaphore::new(permits)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            wait,
            interval: WINDOW / failures_per_minute.max(1),
            epoch: Instant::now(),
            names: RandomState::new(),
            tallies: Mutex::new(Tallies {
                sources: Tally::new(TALLY_CAP),
                names: Tally::new(TALLY_CAP),
            }),
        })))
    }

    /// Count an attempt by `name` from `source`, or say how long to wait.
    fn begin(&self, source: Option<IpAddr>, name: &str) -> Result<Attempt, Rejection> {
        let g = &self.0;
        let now = g.epoch.elapsed();
        let source = source.map(source_key);
        let name_key = g.names.hash_one(name);
        let mut tallies = g.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [
            source.and_then(|s| tallies.sources.retry_after(&s, now, g.interval)),
            tallies.names.retry_after(&name_key, now, g.interval),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            return Err(Rejection::Throttled(wait));
        }
        if let Some(source) = source {
            tallies.sources.charge(source, now, g.interval);
        }
        tallies.names.charge(name_key, now, g.interval);
        let throttled_now = source
            .and_then(|s| tallies.sources.retry_after(&s, now, g.interval))
            .or_else(|| tallies.names.retry_after(&name_key, now, g.interval));
        if throttled_now.is_some() {
            let shown: String = name.chars().take(64).collect();
            tracing::warn!(source = %source.map_or_else(|| "unknown".to_owned(), |s| s.to_string()), name = %shown.escape_debug(), "repeated failed sign-ins: throttling this source or name");
        }
        Ok(Attempt {
            guard: self.clone(),
            source,
            name: name_key,
        })
    }

    /// A turn to check a password: waits up to `wait` while every thread is
    /// busy, unless too many callers wait already.
    async fn turn(&self) -> Result<Turn, Rejection> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let g = &self.0;
        let waiting = Waiting(&g.waiting);
        if g.waiting.fetch_add(1, Ordering::Relaxed) >= g.max_waiting {
            return Err(Rejection::Busy);
        }
        let permit = tokio::time::timeout(g.wait, g.permits.clone().acquire_owned()).await;
        drop(waiting);
        match permit {
            Ok(Ok(permit)) => Ok(Turn {
                guard: self.clone(),
                permit,
            }),
            _ => Err(Rejection::Busy),
        }
    }
}

/// The right to run one password check now.
struct Turn {
    guard: PasswordGuard,
    permit: OwnedSemaphorePermit,
}

impl Turn {
    /// Check `password` against `hash` (`None`: an unknown name, which costs a
    /// hash all the same so that timing does not tell names apart) on the
    /// guard's threads. The turn ends when the check does, even if the caller
    /// has gone.
    async fn check(self, password: String, hash: Option<String>) -> Result<bool, Rejection> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = self.permit;
        let guard = self.guard.clone();
        self.guard.0.threads.spawn(move || {
            let ok = MEMORY.with_borrow_mut(|memory| match &hash {
                Some(hash) => verify_password(&password, hash, memory),
                None => {
                    let _ = verify_password(&password, &guard.0.decoy, memory);
                    false
                }
            });
            drop(permit);
            let _ = tx.send(ok);
        });
        rx.await.map_err(|e| Rejection::Api(ApiError::internal(e)))
    }
}

/// Why a caller is not let in.
#[derive(Debug)]
pub enum Rejection {
    /// No, wrong or unusable credentials, or a store failure.
    Api(ApiError),
    /// Too many failed passwords from this source or for this name: wait this long.
    Throttled(Duration),
    /// Every password-check turn is taken.
    Busy,
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Self {
        Rejection::Api(e)
    }
}

impl From<avail_store::StoreError> for Rejection {
    fn from(e: avail_store::StoreError) -> Self {
        Rejection::Api(e.into())
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, message, retry_after) = match self {
            Rejection::Api(e) => return e.into_response(),
            Rejection::Throttled(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!("too many failed sign-ins; try again in {secs} s"),
                    secs.max(1),
                )
            }
            Rejection::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many password checks at once; try again shortly".to_owned(),
                1,
            ),
        };
        let mut response = crate::rejection::json_error(status, code, message);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        response
    }
}

/// Proof that the caller is an administrator: the only principal that may
/// change anything. Their name goes into the request's log span.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

fn admin(name: &str) -> Admin {
    tracing::Span::current().record("admin", name);
    Admin
}

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (scheme, value) = authorization(
            parts,
            "missing credentials: send `Authorization: Bearer <token>` or Basic",
        )?;
        let value = value.as_str();
        let Authenticator(store) = Authenticator::from_ref(state);
        if scheme.eq_ignore_ascii_case("bearer") {
            let hash = hash_secret(value);
            if let Some(name) = store.administrator_by_token(&hash).await? {
                return Ok(admin(&name));
            }
            if store.machine_by_credential(&hash).await?.is_some() {
                return Err(ApiError::Forbidden(
                    "machines and their users may not change anything".into(),
                )
                .into());
            }
            if store
                .publishing_server_by_credential(&hash)
                .await?
                .is_some()
            {
                return Err(ApiError::Forbidden(
                    "a publishing server may only read the catalog".into(),
                )
                .into());
            }
            Err(ApiError::Unauthorized("unknown or revoked token".into()).into())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
            let (name, password) = decoded
                .split_once(':')
                .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
            let guard = parts
                .extensions
                .get::<PasswordGuard>()
                .cloned()
                .ok_or_else(|| ApiError::internal("no password guard on this router"))?;
            let source = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
            let attempt = guard.begin(source, name)?;
            // The turn first: callers turned away cost no database lookup.
            let turn = match guard.turn().await {
                Ok(turn) => turn,
                Err(e) => {
                    attempt.refund();
                    return Err(e);
                }
            };
            let hash = match store.administrator_password_hash(name).await {
                Ok(hash) => hash,
                Err(e) => {
                    attempt.refund();
                    return Err(e.into());
                }
            };
            match turn.check(password.to_owned(), hash).await {
                Ok(true) => {
                    attempt.refund();
                    Ok(admin(name))
                }
                Ok(false) => Err(ApiError::Unauthorized(
                    "wrong administrator name or password".into(),
                )
                .into()),
                Err(e) => {
                    attempt.refund();
                    Err(e)
                }
            }
        } else {
            Err(ApiError::Unauthorized(format!("unsupported authorization scheme {scheme}")).into())
        }
    }
}

/// Proof that the caller is a machine: `Authorization: Bearer <machine
/// credential>`. The machine's name goes into the request's log span.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The machine's name.
    pub name: String,
}

impl<S> FromRequestParts<S> for Machine
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (scheme, value) = authorization(
            parts,
            "missing credentials: send `Authorization: Bearer <machine credential>`",
        )?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized(format!(
                "unsupported authorization scheme {scheme}: machines send Bearer"
            ))
            .into());
        }
        let Authenticator(lookup) = Authenticator::from_ref(state);
        match lookup.machine_by_credential(&hash_secret(&value)).await? {
            Some(name) => {
                tracing::Span::current().record("machine", name.as_str());
                Ok(Machine { name })
            }
            None => {
                Err(ApiError::Unauthorized("unknown or revoked machine credential".into()).into())
            }
        }
    }
}

/// Proof that the caller is a registered publishing server: `Authorization:
/// Bearer <publishing-server credential>`.
#[derive(Debug, Clone)]
pub struct PublishingServer {
    /// The server's registered name.
    pub name: String,
}

impl<S> FromRequestParts<S> for PublishingServer
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (scheme, value) = authorization(
            parts,
            "missing credentials: send `Authorization: Bearer <publishing-server credential>`",
        )?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized(format!(
                "unsupported authorization scheme {scheme}: publishing servers send Bearer"
            ))
            .into());
        }
        let Authenticator(lookup) = Authenticator::from_ref(state);
        match lookup
            .publishing_server_by_credential(&hash_secret(&value))
            .await?
        {
            Some(name) => Ok(PublishingServer { name }),
            None => Err(ApiError::Unauthorized(
                "unknown or revoked publishing-server credential".into(),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn throttled(r: Result<Attempt, Rejection>) -> Option<Duration> {
        match r {
            Err(Rejection::Throttled(wait)) => Some(wait),
            Ok(_) => None,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn failures_are_limited_per_source_and_per_name() {
        let guard = PasswordGuard::new(5).unwrap();
        for _ in 0..5 {
            assert_eq!(throttled(guard.begin(ip("192.0.2.1"), "carol")), None);
        }
        // The sixth attempt within the minute is refused, for about one interval.
        let wait = throttled(guard.begin(ip("192.0.2.1"), "carol")).unwrap();
        assert!(wait > Duration::from_secs(11) && wait <= Duration::from_secs(12));
        // The same source with another name, the same name from elsewhere.
        assert!(throttled(guard.begin(ip("192.0.2.1"), "dave")).is_some());
        assert!(throttled(guard.begin(ip("192.0.2.2"), "carol")).is_some());
        assert!(throttled(guard.begin(None, "carol")).is_some());
        // Anyone else is unaffected.
        assert_eq!(throttled(guard.begin(ip("192.0.2.2"), "dave")), None);
        // IPv6 counts per /64.
        for i in 0..5 {
            let addr = format!("2001:db8:1:2::{i}");
            assert_eq!(throttled(guard.begin(ip(&addr), &format!("n{i}"))), None);
        }
        assert!(throttled(guard.begin(ip("2001:db8:1:2:ffff::1"), "other")).is_some());
        assert_eq!(throttled(guard.begin(ip("2001:db8:1:3::1"), "other")), None);
        assert_eq!(
            source_key("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn successes_and_unchecked_attempts_are_refunded() {
        let guard = PasswordGuard::new(2).unwrap();
        for _ in 0..20 {
            guard.begin(ip("192.0.2.1"), "carol").unwrap().refund();
        }
        assert_eq!(throttled(guard.begin(ip("192.0.2.1"), "carol")), None);
        let tallies = guard.0.tallies.lock().unwrap();
        assert_eq!(
            (tallies.sources.debt.len(), tallies.names.debt.len()),
            (1, 1)
        );
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut tally = Tally::new(100);
        let interval = Duration::from_secs(12);
        for key in 0..10_000u64 {
            tally.charge(key, Duration::from_millis(key), interval);
            assert!(tally.debt.len() <= 100);
        }
        // The newest are kept, the oldest forgotten.
        assert!(tally.debt.contains_key(&9_999));
        assert!(!tally.debt.contains_key(&0));
        // Entries whose debt has run out make room first.
        let mut tally = Tally::new(2);
        tally.charge(1u64, Duration::ZERO, interval);
        tally.charge(2, Duration::from_secs(100), interval);
        tally.charge(3, Duration::from_secs(100), interval);
        assert_eq!(tally.debt.len(), 2);
        assert!(tally.debt.contains_key(&2) && tally.debt.contains_key(&3));
    }

    #[test]
    fn passwords_are_verified_in_reused_memory() {
        use argon2::password_hash::PasswordVerifier as _;
        let mut memory = Vec::new();
        let default = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &default, &mut memory));
        assert!(!verify_password("correct horsf", &default, &mut memory));
        let grown = memory.len();
        assert_eq!(grown, Params::default().block_count());
        // A cheaper hash (other parameters, other variant) reuses the memory.
        let params = Params::new(64, 1, 1, Some(16)).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let cheap = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("pw", &cheap, &mut memory));
        assert!(!verify_password("pq", &cheap, &mut memory));
        assert_eq!(memory.len(), grown);
        // The argon2 crate agrees, and garbage never matches.
        let parsed = PasswordHash::new(&cheap).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        for junk in [
            "",
            "$argon2id$",
            "not a hash",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
        ] {
            assert!(!verify_password("pw", junk, &mut memory), "{junk}");
        }
    }

    #[tokio::test]
    async fn checks_wait_for_a_turn_then_give_up() {
        let guard = PasswordGuard::with_limits(1, 1, Duration::from_secs(30), 5).unwrap();
        let hash = hash_password("right password").unwrap();
        let check = |password: &'static str| {
            let (guard, hash) = (guard.clone(), hash.clone());
            async move { guard.turn().await?.check(password.into(), Some(hash)).await }
        };
        assert!(matches!(check("right password").await, Ok(true)));
        assert!(matches!(check("wrong").await, Ok(false)));
        // While the one turn is taken, one caller may wait, a second is turned
        // away at once.
        let taken = guard.turn().await.unwrap();
        let waiter = tokio::spawn(check("right password"));
        while guard.0.waiting.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(guard.turn().await, Err(Rejection::Busy)));
        assert!(!waiter.is_finished());
        drop(taken);
        assert!(matches!(waiter.await.unwrap(), Ok(true)));
        assert_eq!(guard.0.waiting.load(Ordering::Relaxed), 0);
        // An unknown name costs a check and fails.
        assert!(matches!(
            guard.turn().await.unwrap().check("x".into(), None).await,
            Ok(false)
        ));

        // A caller that waits too long gives up with 503.
        let impatient = PasswordGuard::with_limits(1, 8, Duration::from_millis(100), 5).unwrap();
        let _taken = impatient.turn().await.unwrap();
        let Err(rejection) = impatient.turn().await else {
            panic!("a second turn while the only one is taken");
        };
        assert!(matches!(rejection, Rejection::Busy));
        let response = rejection.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    /// Credentials held in memory, as a publishing node's catalog will hold them.
    struct Fixed {
        password_hash: String,
    }

    #[async_trait::async_trait]
    impl CredentialLookup for Fixed {
        async fn administrator_by_token(&self, hash: &str) -> Result<Option<String>, ApiError> {
            Ok((hash == hash_secret("adm-token")).then(|| "alice".to_owned()))
        }

        async fn administrator_password_hash(
            &self,
            name: &str,
        ) -> Result<Option<String>, ApiError> {
            Ok((name == "alice").then(|| self.password_hash.clone()))
        }

        async fn machine_by_credential(&self, hash: &str) -> Result<Option<String>, ApiError> {
            Ok((hash == hash_secret("pc1-credential")).then(|| "pc1".to_owned()))
        }

        async fn publishing_server_by_credential(
            &self,
            hash: &str,
        ) -> Result<Option<String>, ApiError> {
            Ok((hash == hash_secret("pub1-credential")).then(|| "pub1".to_owned()))
        }
    }

    /// Status and error code of `GET path` with `authorization`, through the
    /// extractors on a router whose state is only an [`Authenticator`].
    async fn call(path: &str, authorization: Option<&str>) -> (StatusCode, String) {
        use axum::routing::get;
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let lookup = Fixed {
            password_hash: hash_password("right password").unwrap(),
        };
        let router = axum::Router::new()
            .route("/admin", get(|_: Admin| async { "admin" }))
            .route("/machine", get(|m: Machine| async move { m.name }))
            .with_state(Authenticator::new(Arc::new(lookup)))
            .layer(axum::Extension(PasswordGuard::new(5).unwrap()));
        let mut request = axum::http::Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = router
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = if status.is_success() {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        (status, text)
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[tokio::test]
    async fn extractors_authenticate_from_any_lookup() {
        let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized".to_owned());
        let forbidden = (StatusCode::FORBIDDEN, "forbidden".to_owned());
        // Administrators: Bearer tokens and Basic passwords.
        assert_eq!(call("/admin", None).await, unauthorized);
        assert_eq!(call("/admin", Some("Bearer wrong")).await, unauthorized);
        assert_eq!(call("/admin", Some("Bearer")).await, unauthorized);
        assert_eq!(call("/admin", Some("Digest x")).await, unauthorized);
        assert_eq!(
            call("/admin", Some("Bearer adm-token")).await,
            (StatusCode::OK, "admin".to_owned())
        );
        assert_eq!(
            call("/admin", Some("bearer  adm-token ")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call("/admin", Some("Bearer pc1-credential")).await,
            forbidden
        );
        assert_eq!(
            call("/admin", Some("Bearer pub1-credential")).await,
            forbidden
        );
        assert_eq!(
            call("/admin", Some(&basic("alice:right password"))).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call("/admin", Some(&basic("alice:wrong password"))).await,
            unauthorized
        );
        assert_eq!(
            call("/admin", Some(&basic("bob:right password"))).await,
            unauthorized
        );
        assert_eq!(call("/admin", Some(&basic("no colon"))).await, unauthorized);
        assert_eq!(call("/admin", Some("Basic %%%")).await, unauthorized);
        // Machines: Bearer machine credentials only.
        assert_eq!(
            call("/machine", Some("Bearer pc1-credential")).await,
            (StatusCode::OK, "pc1".to_owned())
        );
        assert_eq!(call("/machine", None).await, unauthorized);
        assert_eq!(
            call("/machine", Some("Bearer adm-token")).await,
            unauthorized
        );
        assert_eq!(
            call("/machine", Some(&basic("alice:right password"))).await,
            unauthorized
        );
    }
}
