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
//! user ids of usage are UUIDs). `aud` and `iss` are not checked. Any other
//! algorithm (`none`, HS256 when a key set is configured, RS256 when a
//! secret is) is refused. Verification is [`jsonwebtoken`]'s, with its
//! pure-Rust crypto backend (no C toolchain in the build).
//!
//! The files are read once at start: rotating keys means a restart (or a
//! rolling restart of the replicas).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

/// Seconds a token may be past its `exp` (clock skew between issuer and API).
pub const LEEWAY_S: u64 = 60;
/// Shortest HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserTokenSettings {
    /// A JSON Web Key Set with RS256 and/or ES256 public keys.
    JwksFile(PathBuf),
    /// A file holding the HS256 secret (surrounding whitespace is trimmed).
    Hs256SecretFile(PathBuf),
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

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The configured keys and the verification.
pub struct UserTokens {
    keys: Vec<Key>,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.keys.iter().map(|k| (k.kid.clone(), k.alg)).collect();
        f.debug_struct("UserTokens").field("keys", &algs).finish()
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

impl UserTokens {
    /// Loads the keys the settings name; fails on an unreadable file, a key
    /// set without a usable key, or a short secret.
    pub fn load(settings: &UserTokenSettings) -> Result<UserTokens, UserTokenKeyError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| UserTokenKeyError::Io { path: path.to_owned(), source });
        match settings {
            UserTokenSettings::JwksFile(path) => {
                let set: JwkSet =
                    serde_json::from_slice(&read(path)?).map_err(|source| UserTokenKeyError::Jwks { path: path.clone(), source })?;
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
                Ok(UserTokens { keys })
            }
            UserTokenSettings::Hs256SecretFile(path) => {
                let raw = read(path)?;
                let secret = raw.trim_ascii();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(UserTokenKeyError::ShortSecret { path: path.clone() });
                }
                let key = DecodingKey::from_secret(secret).map_err(|_| UserTokenKeyError::ShortSecret { path: path.clone() })?;
                Ok(UserTokens { keys: vec![Key { kid: None, alg: Algorithm::HS256, key }] })
            }
        }
    }

    /// The end user a token speaks for (its `sub`), or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Uuid, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        let candidates =
            self.keys.iter().filter(|k| k.alg == header.alg).filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        for k in candidates {
            let mut validation = Validation::new(k.alg);
            validation.leeway = LEEWAY_S;
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "sub"]);
            match decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => return Uuid::parse_str(data.claims.sub.trim()).map_err(|_| TokenError::Invalid),
                // The signature verified (claims are checked after it): expired.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                Err(_) => continue,
            }
        }
        Err(TokenError::Invalid)
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

    fn token(secret: &str, alg: Algorithm, sub: &str, exp_offset_s: i64) -> String {
        let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_offset_s;
        let claims = serde_json::json!({"sub": sub, "exp": exp});
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn hs256_tokens_are_verified() {
        let secret = Uuid::new_v4().simple().to_string(); // 32 random hex digits
        let path = secret_file(&secret);
        let tokens = UserTokens::load(&UserTokenSettings::Hs256SecretFile(path.clone())).unwrap();
        let user = Uuid::new_v4();
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, &user.to_string(), 600)), Ok(user));
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, &user.to_string(), -600)), Err(TokenError::Expired));
        let other = Uuid::new_v4().simple().to_string();
        assert_eq!(tokens.verify(&token(&other, Algorithm::HS256, &user.to_string(), 600)), Err(TokenError::Invalid), "forged");
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS384, &user.to_string(), 600)), Err(TokenError::Invalid), "other alg");
        assert_eq!(tokens.verify(&token(&secret, Algorithm::HS256, "alice", 600)), Err(TokenError::Invalid), "sub not a UUID");
        assert_eq!(tokens.verify("not.a.token"), Err(TokenError::Invalid));
        // An unsigned token ("alg": "none") is never accepted.
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&format!(r#"{{"sub":"{user}","exp":9999999999}}"#)));
        assert_eq!(tokens.verify(&unsigned), Err(TokenError::Invalid));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn short_secrets_and_empty_key_sets_are_refused_at_start() {
        let path = secret_file("too-short");
        assert!(matches!(UserTokens::load(&UserTokenSettings::Hs256SecretFile(path.clone())), Err(UserTokenKeyError::ShortSecret { .. })));
        std::fs::write(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
        assert!(matches!(UserTokens::load(&UserTokenSettings::JwksFile(path.clone())), Err(UserTokenKeyError::NoUsableKey { .. })));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
