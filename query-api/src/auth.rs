//! API keys: who is calling, for which tenant, with which role.
//!
//! The keys file (TOML) stores only the SHA-256 of each key:
//!
//! ```toml
//! [[keys]]
//! name = "tenant-a-dashboard"
//! tenant_id = "11111111-1111-4111-8111-111111111111"
//! role = "read"            # or "admin"
//! sha256 = "<hex of sha256(plain key)>"
//! requires_user_token = false  # true: refused without an end-user token
//! ```
//!
//! A request presents its key as `X-API-Key: <key>` or
//! `Authorization: Bearer <key>`; when end-user tokens are configured
//! ([`crate::user_tokens`]), the key travels only in `X-API-Key` and
//! `Authorization: Bearer` carries the end user's JWT, whose `sub` becomes
//! [`Caller::user_id`]. The presented key is hashed and compared
//! with every stored hash in constant time, so timing reveals neither which
//! key matched nor how much of it. The tenant of a request comes only from
//! its key: no parameter can name another tenant.
//!
//! The file is re-read when its modification time changes (checked at most
//! every `reload_interval`), so keys can be added, rotated and revoked
//! without a restart. A file that fails to parse on reload is logged and
//! the previous keys stay in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;
use crate::user_tokens::{TokenError, UserTokens};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read analytics and usage of its tenant.
    Read,
    /// Read, plus manage plan limits of its tenant.
    Admin,
}

/// One entry of the keys file.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyEntry {
    pub name: String,
    pub tenant_id: Uuid,
    pub role: Role,
    /// Lower- or upper-case hex of SHA-256 of the plain key.
    pub sha256: String,
    /// A key for front ends: every request with it must carry a valid
    /// end-user token (401 otherwise). Needs end-user tokens configured.
    #[serde(default)]
    pub requires_user_token: bool,
}

#[derive(Debug, Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone)]
struct Loaded {
    keys: Vec<(KeyEntry, [u8; 32])>,
    mtime: Option<SystemTime>,
    checked: Instant,
}

/// Errors loading the keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{path}: key `{name}`: sha256 must be 64 hex digits")]
    BadHash { path: PathBuf, name: String },
}

/// The keys in force, reloaded when the file changes.
#[derive(Debug)]
pub struct KeyStore {
    path: Option<PathBuf>,
    reload_interval: Duration,
    inner: RwLock<Loaded>,
    /// End-user token verification (`None`: keys only).
    user_tokens: Option<Arc<UserTokens>>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: Uuid,
    pub role: Role,
    pub key_name: String,
    /// The end user of a valid end-user token (its `sub`); `None`: no token.
    pub user_id: Option<Uuid>,
    requires_user_token: bool,
    /// The end-user token step has run (the rate-limit middleware only
    /// checks the key).
    token_checked: bool,
}

impl Caller {
    /// The user a request is about: with an end-user token, the token's
    /// user (a different `requested` one is 403); without, `requested`.
    pub fn user_for(&self, requested: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
        match (self.user_id, requested) {
            (Some(me), Some(other)) if me != other => Err(ApiError::Forbidden("user_id does not match the authenticated user".into())),
            (Some(me), _) => Ok(Some(me)),
            (None, requested) => Ok(requested),
        }
    }

    /// 403 unless the caller holds an admin key.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("This operation requires an admin API key".into()))
        }
    }
}

/// A caller holding an admin key (403 otherwise).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

/// SHA-256 of a key, lower-case hex (what the keys file stores).
pub fn hash_key(plain: &str) -> String {
    let digest = Sha256::digest(plain.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn parse_entries(path: &Path, text: &str) -> Result<Vec<(KeyEntry, [u8; 32])>, KeyFileError> {
    let file: KeysFile = toml::from_str(text).map_err(|source| KeyFileError::Toml { path: path.to_owned(), source })?;
    file.keys
        .into_iter()
        .map(|k| match parse_hex32(&k.sha256) {
            Some(h) => Ok((k, h)),
            None => Err(KeyFileError::BadHash { path: path.to_owned(), name: k.name.clone() }),
        })
        .collect()
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeyStore {
    /// Loads the keys file; fails if it cannot be read or parsed.
    pub fn load(path: impl Into<PathBuf>, reload_interval: Duration) -> Result<Self, KeyFileError> {
        let path = path.into();
        let m = mtime(&path);
        let text = std::fs::read_to_string(&path).map_err(|source| KeyFileError::Io { path: path.clone(), source })?;
        let keys = parse_entries(&path, &text)?;
        Ok(Self {
            path: Some(path),
            reload_interval,
            inner: RwLock::new(Loaded { keys, mtime: m, checked: Instant::now() }),
            user_tokens: None,
        })
    }

    /// A fixed set of keys (plain key, entry without hash), never reloaded.
    pub fn from_entries(entries: Vec<KeyEntry>) -> Result<Self, KeyFileError> {
        let keys = entries
            .into_iter()
            .map(|k| match parse_hex32(&k.sha256) {
                Some(h) => Ok((k, h)),
                None => Err(KeyFileError::BadHash { path: PathBuf::new(), name: k.name.clone() }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path: None,
            reload_interval: Duration::MAX,
            inner: RwLock::new(Loaded { keys, mtime: None, checked: Instant::now() }),
            user_tokens: None,
        })
    }

    /// Verifies end-user tokens with these keys (`None`: keys only).
    pub fn with_user_tokens(mut self, tokens: Option<UserTokens>) -> Self {
        self.user_tokens = tokens.map(Arc::new);
        self
    }

    /// The end-user token verification, if configured.
    pub fn user_tokens(&self) -> Option<&Arc<UserTokens>> {
        self.user_tokens.as_ref()
    }

    /// Starts re-reading the end-user token key file when it changes (once;
    /// nothing without end-user tokens). Must be called inside a Tokio runtime.
    pub fn start_user_token_refresh(&self) {
        if let Some(tokens) = &self.user_tokens {
            tokens.start();
        }
    }

    /// Whether end-user tokens are configured.
    pub fn user_tokens_enabled(&self) -> bool {
        self.user_tokens.is_some()
    }

    /// The key a request presents: `X-API-Key`, or `Authorization: Bearer`
    /// unless that carries end-user tokens.
    pub fn presented_key<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        if let Some(v) = header_key(parts) {
            return Some(v);
        }
        if self.user_tokens.is_some() {
            return None;
        }
        bearer(parts)
    }

    /// The end-user step of a key's caller: with tokens configured and a
    /// bearer token, its user (401 if expired or not valid); without a
    /// token, the key alone unless the key requires one.
    fn bind_user(&self, parts: &Parts, mut caller: Caller) -> Result<Caller, ApiError> {
        caller.token_checked = true;
        let Some(tokens) = &self.user_tokens else {
            if caller.requires_user_token {
                return Err(ApiError::Unauthorized("This key requires an end-user token, and none are configured".into()));
            }
            return Ok(caller);
        };
        match bearer(parts) {
            Some(token) => match tokens.verify(token) {
                Ok(user) => caller.user_id = Some(user),
                Err(TokenError::Expired) => return Err(ApiError::Unauthorized("Token expired".into())),
                Err(TokenError::Invalid) => return Err(ApiError::Unauthorized("Invalid token".into())),
            },
            None if caller.requires_user_token => {
                return Err(ApiError::Unauthorized("Missing end-user token (Authorization: Bearer)".into()))
            }
            None => {}
        }
        Ok(caller)
    }

    /// Re-reads the file if its modification time changed since the last
    /// load and the last check is older than the reload interval.
    fn maybe_reload(&self) {
        let Some(path) = &self.path else { return };
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            if inner.checked.elapsed() < self.reload_interval {
                return;
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.checked.elapsed() < self.reload_interval {
            return;
        }
        inner.checked = Instant::now();
        let m = mtime(path);
        if m == inner.mtime {
            return;
        }
        match std::fs::read_to_string(path)
            .map_err(|source| KeyFileError::Io { path: path.clone(), source })
            .and_then(|t| parse_entries(path, &t))
        {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "reloaded API keys");
                inner.keys = keys;
                inner.mtime = m;
            }
            Err(e) => {
                // Keep the previous keys; try again when the file changes again.
                inner.mtime = m;
                tracing::error!(error = %e, "API keys file changed but could not be loaded; keeping the previous keys");
            }
        }
    }

    /// The caller owning `presented`, if any. Compares against every key in
    /// constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        self.maybe_reload();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut found: Option<&KeyEntry> = None;
        for (entry, hash) in &inner.keys {
            let eq: bool = digest.ct_eq(hash).into();
            if eq && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            tenant_id: e.tenant_id,
            role: e.role,
            key_name: e.name.clone(),
            user_id: None,
            requires_user_token: e.requires_user_token,
            token_checked: false,
        })
    }

    /// Number of keys in force.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of `X-API-Key`, if any.
fn header_key(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok())?.trim();
    (!v.is_empty()).then_some(v)
}

/// The credential of `Authorization: Bearer`, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    let auth = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let k = rest.trim();
        (!k.is_empty()).then_some(k)
    } else {
        None
    }
}

/// The caller of a request, authenticated against the key store of any
/// state that has one (`FromRef`). The rate-limit middleware may have
/// authenticated the request already; then its caller is reused.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<KeyStore>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>().filter(|c| c.token_checked) {
            return Ok(c.clone());
        }
        let keys = Arc::<KeyStore>::from_ref(state);
        let caller = match parts.extensions.get::<Caller>() {
            Some(c) => c.clone(),
            None => {
                let missing = if keys.user_tokens_enabled() {
                    "Missing API key (X-API-Key)"
                } else {
                    "Missing API key (X-API-Key or Authorization: Bearer)"
                };
                let key = keys.presented_key(parts).ok_or_else(|| ApiError::Unauthorized(missing.into()))?;
                keys.authenticate(key).ok_or_else(|| ApiError::Unauthorized("Invalid API key".into()))?
            }
        };
        let caller = keys.bind_user(parts, caller)?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl<S> FromRequestParts<S> for AdminCaller
where
    S: Send + Sync,
    Arc<KeyStore>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(AdminCaller(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_matches() {
        let e =
            KeyEntry { name: "a".into(), tenant_id: Uuid::nil(), role: Role::Read, sha256: hash_key("secret"), requires_user_token: false };
        let store = KeyStore::from_entries(vec![e]).unwrap();
        assert!(store.authenticate("secret").is_some());
        assert!(store.authenticate("secret2").is_none());
        assert!(store.authenticate("").is_none());
    }

    #[test]
    fn keys_file_changes_apply_without_restart() {
        let dir = std::env::temp_dir().join(format!("agentmeter-keys-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        let write = |key: &str, age_s: u64| {
            let text =
                format!("[[keys]]\nname = \"k\"\ntenant_id = \"{}\"\nrole = \"read\"\nsha256 = \"{}\"\n", Uuid::nil(), hash_key(key));
            std::fs::write(&path, text).unwrap();
            // Distinct modification times even on coarse-grained file systems.
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
        };
        write("old-key", 100);
        let store = KeyStore::load(&path, Duration::ZERO).unwrap();
        assert!(store.authenticate("old-key").is_some());
        write("new-key", 50);
        assert!(store.authenticate("old-key").is_none(), "revoked");
        assert!(store.authenticate("new-key").is_some(), "rotated in");
        // A broken file keeps the keys in force.
        std::fs::write(&path, "not toml [[").unwrap();
        assert!(store.authenticate("new-key").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_keys_file_matches_documented_keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/api-keys.toml");
        let store = KeyStore::load(path, Duration::from_secs(1)).unwrap();
        let a = store.authenticate("am_dev_tenant_a").unwrap();
        assert_eq!(a.tenant_id.to_string(), "11111111-1111-4111-8111-111111111111");
        assert_eq!(a.role, Role::Read);
        let b = store.authenticate("am_dev_tenant_b").unwrap();
        assert_eq!(b.tenant_id.to_string(), "22222222-2222-4222-8222-222222222222");
        let admin = store.authenticate("am_dev_admin").unwrap();
        assert_eq!(admin.tenant_id, a.tenant_id);
        assert_eq!(admin.role, Role::Admin);
    }
}
