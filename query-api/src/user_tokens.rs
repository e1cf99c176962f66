//! End-user tokens (SEED_SPEC §2.1): an optional JWT next to the API key
//! that says which end user is calling, so that usage answers are that
//! user's and a request cannot name another user.
//!
//! Off unless `--jwt-jwks-file` (RS256 / ES256 public keys, a JSON Web Key
//! Set) or `--jwt-hs256-secret-file` (a shared secret of at least 32 bytes)
//! is given. When on, the API key travels in `X-API-Key` and the token in
//! `Authorization: Bearer <jwt>`, the contract's arrangement; a request
//! without a token is served on the key alone, as before.
//!
//! A token is accepted when its signature verifies with a configured key
//! of the algorithm its header names (the header's `kid` picks the key of a
//! key set; without one every key of that algorithm is tried), its `exp` has
//! not passed (60 s leeway for clock skew) and its `sub` is a UUID (the
//! user ids of usage are UUIDs). With `--jwt-audience` its `aud` must name
//! one of the configured audiences, with `--jwt-issuer` its `iss` must be
//! the configured issuer (a token without the claim is refused too);
//! without them `aud` and `iss` are not checked. Any other algorithm
//! (`none`, HS256 when a key set is configured, RS256 when a secret is) is
//! refused. Verification, including `exp`, `aud` and `iss`, is
//! [`jsonwebtoken`]'s `Validation`, with its pure-Rust crypto backend (no C
//! toolchain in the build).
//!
//! Keys rotate without a restart: a background task re-reads the key file
//! every `--jwt-keys-refresh-s` seconds and compares its content (a SHA-256
//! of the bytes, so a rewrite within the same second of modification time is
//! seen too) with what it saw last. A changed file that parses replaces the
//! whole key set at once; a file that is missing, unreadable or invalid is
//! logged once as an error and the previous keys stay in force (a bad
//! rotation never leaves the API without keys). Polling rather than file
//! notifications or SIGHUP: it works the same on every file system,
//! through the symlink swaps of Kubernetes secret volumes and in every
//! replica, with nothing to send.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Seconds a token may be past its `exp` (clock skew between issuer and API).
pub const LEEWAY_S: u64 = 60;
/// Shortest HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Default interval of the key file check (`--jwt-keys-refresh-s`).
pub const DEFAULT_REFRESH_S: u64 = 30;

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JSON Web Key Set with RS256 and/or ES256 public keys.
    JwksFile(PathBuf),
    /// A file holding the HS256 secret (surrounding whitespace is trimmed).
    Hs256SecretFile(PathBuf),
}

impl KeySource {
    /// The file the keys are read from.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::JwksFile(p) | KeySource::Hs256SecretFile(p) => p,
        }
    }
}

/// End-user token settings (the `--jwt-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTokenSettings {
    pub keys: KeySource,
    /// Accepted `aud` values (a token must name at least one); empty: `aud`
    /// is not checked.
    pub audiences: Vec<String>,
    /// The required `iss`; `None`: `iss` is not checked.
    pub issuer: Option<String>,
    /// How often the key file is checked for changes; `None`: read once.
    pub refresh_interval: Option<Duration>,
}

impl UserTokenSettings {
    /// Keys from `keys`, no `aud` / `iss` check, the default refresh.
    pub fn new(keys: KeySource) -> Self {
        Self { keys, audiences: Vec::new(), issuer: None, refresh_interval: Some(Duration::from_secs(DEFAULT_REFRESH_S)) }
    }
}

/// Errors loading the keys.
#[derive(Debug, thiserror::Error)]
pub enum UserTokenKeyError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a JSON Web Key Set: {source}")]
    Jwks { path: PathBuf, source: serde_json::Error },
    #[error("{path}: no RS256 or ES256 signing key (found {found} keys)")]
    NoUsableKey { path: PathBuf, found: usize },
    #[error("{path}: the HS256 secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret { path: PathBuf },
}

/// Why a presented token is refused (both are 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Token expired")]
    Expired,
    #[error("Invalid token")]
    Invalid,
}

/// What one check of the key file did.
#[derive(Debug)]
pub enum Refresh {
    /// The file reads as it did at the last check: nothing to do.
    Unchanged,
    /// The file changed and its keys are now in force.
    Reloaded { keys: usize },
    /// The file changed but cannot be used; the previous keys stay.
    Failed(UserTokenKeyError),
}

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// What the last check saw of the key file.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

/// The configured keys (replaced as a whole when the file changes) and the
/// verification.
pub struct UserTokens {
    settings: UserTokenSettings,
    keys: RwLock<Arc<Vec<Key>>>,
    seen: Mutex<Seen>,
    checks: AtomicU64,
    started: AtomicBool,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.current();
        let algs: Vec<_> = keys.iter().map(|k| (k.kid.clone(), k.alg)).collect();
        f.debug_struct("UserTokens").field("settings", &self.settings).field("keys", &algs).finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The algorithm a JWK is for: its `alg`, else what its key type implies;
/// `None` for anything but RS256 / ES256 signing keys.
fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(_) => None,
    }
}

/// The keys in the bytes of a key file; fails on a key set without a usable
/// key or a short secret.
fn parse_keys(source: &KeySource, bytes: &[u8]) -> Result<Vec<Key>, UserTokenKeyError> {
    match source {
        KeySource::JwksFile(path) => {
            let set: JwkSet = serde_json::from_slice(bytes).map_err(|source| UserTokenKeyError::Jwks { path: path.clone(), source })?;
            let keys: Vec<Key> = set
                .keys
                .iter()
                .filter_map(|jwk| {
                    let alg = jwk_algorithm(jwk)?;
                    let key = DecodingKey::from_jwk(jwk).ok()?;
                    Some(Key { kid: jwk.common.key_id.clone(), alg, key })
                })
                .collect();
            if keys.is_empty() {
                return Err(UserTokenKeyError::NoUsableKey { path: path.clone(), found: set.keys.len() });
            }
            if keys.len() < set.keys.len() {
                tracing::warn!(path = %path.display(), used = keys.len(), found = set.keys.len(), "some keys of the JWKS file are not RS256/ES256 signing keys and are ignored");
            }
            Ok(keys)
        }
        KeySource::Hs256SecretFile(path) => {
            let secret = bytes.trim_ascii();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(UserTokenKeyError::ShortSecret { path: path.clone() });
            }
            let key = DecodingKey::from_secret(secret).map_err(|_| UserTokenKeyError::ShortSecret { path: path.clone() })?;
            Ok(vec![Key { kid: None, alg: Algorithm::HS256, key }])
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, UserTokenKeyError> {
    std::fs::read(path).map_err(|source| UserTokenKeyError::Io { path: path.to_owned(), source })
}

impl UserTokens {
    /// Loads the keys the settings name; fails on an unreadable file, a key
    /// set without a usable key, or a short secret (the API does not start).
    pub fn load(settings: &UserTokenSettings) -> Result<UserTokens, UserTokenKeyError> {
        let bytes = read(settings.keys.path())?;
        let keys = parse_keys(&settings.keys, &bytes)?;
        Ok(UserTokens {
            settings: settings.clone(),
            keys: RwLock::new(Arc::new(keys)),
            seen: Mutex::new(Seen::Content(Sha256::digest(&bytes).into())),
            checks: AtomicU64::new(0),
            started: AtomicBool::new(false),
        })
    }

    fn current(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of keys in force.
    pub fn key_count(&self) -> usize {
        self.current().len()
    }

    /// Checks of the key file completed so far (whatever their outcome).
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Acquire)
    }

    /// Checks the key file once: when its content differs from what the
    /// last check saw, its keys replace the ones in force, or, if it cannot
    /// be read or used, an error is logged and the keys stay as they are.
    pub fn refresh(&self) -> Refresh {
        let path = self.settings.keys.path();
        let bytes = read(path);
        let now = match &bytes {
            Ok(b) => Seen::Content(Sha256::digest(b).into()),
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        let outcome = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                Refresh::Unchanged
            } else {
                *seen = now;
                match bytes.and_then(|b| parse_keys(&self.settings.keys, &b)) {
                    Ok(keys) => {
                        let n = keys.len();
                        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                        tracing::info!(path = %path.display(), keys = n, "reloaded the end-user token keys");
                        Refresh::Reloaded { keys: n }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the end-user token key file changed but cannot be used; keeping the previous keys");
                        Refresh::Failed(e)
                    }
                }
            }
        };
        self.checks.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Spawns the key file check every refresh interval, once (later calls
    /// and a settings without interval do nothing). Must be called inside
    /// a Tokio runtime; the task ends when the tokens are dropped.
    pub fn start(self: &Arc<Self>) {
        let Some(every) = self.settings.refresh_interval.filter(|d| !d.is_zero()) else { return };
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(refresh_every(Arc::downgrade(self), every));
        }
    }

    /// The checks of `aud`, `iss`, `exp` and `sub` for a key of `alg`.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        let mut required = vec!["exp", "sub"];
        if self.settings.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.audiences);
            required.push("aud");
        }
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The end user a token speaks for (its `sub`), or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Uuid, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        let keys = self.current();
        let candidates =
            keys.iter().filter(|k| k.alg == header.alg).filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        for k in candidates {
            match decode::<Claims>(token, &k.key, &self.validation(k.alg)) {
                Ok(data) => return Uuid::parse_str(data.claims.sub.trim()).map_err(|_| TokenError::Invalid),
                // The signature verified (claims are checked after it): expired.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                Err(_) => continue,
            }
        }
        Err(TokenError::Invalid)
    }
}

/// Checks the key file of `tokens` every `every` until they are dropped.
async fn refresh_every(tokens: Weak<UserTokens>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the file was just read
    loop {
        tick.tick().await;
        let Some(tokens) = tokens.upgrade() else { return };
        // A small file read, off the request workers.
        if tokio::task::spawn_blocking(move || tokens.refresh()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn secret_file(secret: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentmeter-jwt-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path
    }

    fn hs256(path: &Path) -> UserTokenSettings {
        UserTokenSettings::new(KeySource::Hs256SecretFile(path.to_owned()))
    }

    fn signed(secret: &str, alg: Algorithm, claims: &serde_json::Value) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    }

    fn token(secret: &str, alg: Algorithm, sub: &str, exp_offset_s: i64) -> String {
        let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_offset_s;
        signed(secret, alg, &serde_json::json!({"sub": sub, "exp": exp}))
    }

    fn random_secret() -> String {
        Uuid::new_v4().simple().to_string() // 32 random hex digits
    }

    #[test]
    fn hs256_tokens_are_verified() {
        let secret = random_secret();
        let path = secret_file(&secret);
        let tokens = UserTokens::load(&hs256(&path)).unwrap();
        let user = Uuid::new_v4();
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, &user.to_string(), 600)), Ok(user));
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, &user.to_string(), -600)), Err(TokenError::Expired));
        let other = random_secret();
        assert_eq!(tokens.verify(&token(&other, Algorithm::HS256, &user.to_string(), 600)), Err(TokenError::Invalid), "forged");
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS384, &user.to_string(), 600)), Err(TokenError::Invalid), "other alg");
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, "alice", 600)), Err(TokenError::Invalid), "sub not a UUID");
        assert_eq!(tokens.verify("not.a.token"), Err(TokenError::Invalid));
        // Without --jwt-audience / --jwt-issuer, `aud` and `iss` are not checked.
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let any = serde_json::json!({"sub": user, "exp": exp, "aud": "anyone", "iss": "anybody"});
        assert_eq!(tokens.verify(&signed(&secret, Algorithm::HS256, &any)), Ok(user));
        // An unsigned token ("alg": "none") is never accepted.
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&format!(r#"{{"sub":"{user}","exp":9999999999}}"#)));
        assert_eq!(tokens.verify(&unsigned), Err(TokenError::Invalid));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let secret = random_secret();
        let path = secret_file(&secret);
        let settings = UserTokenSettings {
            audiences: vec!["usage-api".into(), "billing".into()],
            issuer: Some("https://login.example.com/".into()),
            ..hs256(&path)
        };
        let tokens = UserTokens::load(&settings).unwrap();
        let user = Uuid::new_v4();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let iss = "https://login.example.com/";
        let verify = |claims: serde_json::Value| tokens.verify(&signed(&secret, Algorithm::HS256, &claims));
        assert_eq!(verify(serde_json::json!({"sub": user, "exp": exp, "aud": "usage-api", "iss": iss})), Ok(user));
        assert_eq!(verify(serde_json::json!({"sub": user, "exp": exp, "aud": "billing", "iss": iss})), Ok(user), "either audience");
        assert_eq!(
            verify(serde_json::json!({"sub": user, "exp": exp, "aud": ["other", "billing"], "iss": iss})),
            Ok(user),
            "a list naming one"
        );
        for (what, claims) in [
            ("other aud", serde_json::json!({"sub": user, "exp": exp, "aud": "other", "iss": iss})),
            ("aud list without ours", serde_json::json!({"sub": user, "exp": exp, "aud": ["other", "more"], "iss": iss})),
            ("no aud", serde_json::json!({"sub": user, "exp": exp, "iss": iss})),
            ("other iss", serde_json::json!({"sub": user, "exp": exp, "aud": "usage-api", "iss": "https://evil.example.com/"})),
            ("no iss", serde_json::json!({"sub": user, "exp": exp, "aud": "usage-api"})),
            ("aud not a string", serde_json::json!({"sub": user, "exp": exp, "aud": 7, "iss": iss})),
        ] {
            assert_eq!(verify(claims), Err(TokenError::Invalid), "{what}");
        }
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn short_secrets_and_empty_key_sets_are_refused_at_start() {
        let path = secret_file("too-short");
        assert!(matches!(UserTokens::load(&hs256(&path)), Err(UserTokenKeyError::ShortSecret { .. })));
        std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
        let jwks = UserTokenSettings::new(KeySource::JwksFile(path.clone()));
        assert!(matches!(UserTokens::load(&jwks), Err(UserTokenKeyError::NoUsableKey { .. })));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_changed_file_replaces_the_keys_and_a_bad_one_keeps_them() {
        let (old, new) = (random_secret(), random_secret());
        let path = secret_file(&old);
        let tokens = UserTokens::load(&hs256(&path)).unwrap();
        let user = Uuid::new_v4();
        let ok = |secret: &str| tokens.verify(&token(secret, Algorithm::HS256, &user.to_string(), 600)) == Ok(user);
        assert!(matches!(tokens.refresh(), Refresh::Unchanged));
        assert!(ok(&old) && !ok(&new));

        std::fs::write(&path, &new).unwrap();
        assert!(matches!(tokens.refresh(), Refresh::Reloaded { keys: 1 }));
        assert!(ok(&new) && !ok(&old), "rotated: the new secret only");
        assert!(matches!(tokens.refresh(), Refresh::Unchanged));

        // Invalid (too short), then missing: logged, the keys stay.
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(tokens.refresh(), Refresh::Failed(UserTokenKeyError::ShortSecret { .. })));
        assert!(matches!(tokens.refresh(), Refresh::Unchanged), "the same bad file is reported once");
        assert!(ok(&new));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(tokens.refresh(), Refresh::Failed(UserTokenKeyError::Io { .. })));
        assert!(matches!(tokens.refresh(), Refresh::Unchanged));
        assert!(ok(&new), "a missing file keeps the keys");

        // Back with a valid secret: in force at the next check.
        std::fs::write(&path, &old).unwrap();
        assert!(matches!(tokens.refresh(), Refresh::Reloaded { keys: 1 }));
        assert!(ok(&old) && !ok(&new));
        assert_eq!(tokens.checks(), 8);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
