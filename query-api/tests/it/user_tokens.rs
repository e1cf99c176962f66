//! End-user tokens (docs/api.md, "End-user tokens"): with
//! `--jwt-jwks-file` (ES256 and RS256 keys generated here) or
//! `--jwt-hs256-secret-file`, a valid token makes usage answers the token
//! user's; another `user_id` is 403; expired, forged and tampered tokens are
//! 401, and so are tokens for another audience or issuer when
//! `--jwt-audience` / `--jwt-issuer` are set; a key that requires a token is
//! 401 without one; the API key moves to `X-API-Key`; a key set rotated on
//! disk applies while the API runs. No key material is committed: every key
//! is made here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentmeter_api::auth::{hash_key, KeyEntry, KeyStore, Role};
use agentmeter_api::user_tokens::UserTokens;
use agentmeter_api::{AppState, Args};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Parser;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{clickhouse_url, http_client, serve, TestDb};

const ADMIN: &str = "am_test_tokens_admin";
const FRONT: &str = "am_test_tokens_front";

/// A P-256 key made from fresh random bytes.
struct EcKey {
    secret: p256::SecretKey,
}

impl EcKey {
    fn generate() -> EcKey {
        loop {
            let mut bytes = [0u8; 32];
            bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return EcKey { secret };
            }
        }
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: &str) -> Value {
        let point = self.secret.public_key().to_sec1_bytes();
        assert_eq!(point.len(), 65, "uncompressed point");
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])})
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let der = self.secret.to_pkcs8_der().unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_ec_der(der.as_bytes())).unwrap()
    }
}

/// An RSA key (the crate's default size, 3072 bits) made from the
/// operating system's random numbers.
struct RsaKey {
    /// PKCS#1 DER of the private key (what jsonwebtoken signs with).
    der: Vec<u8>,
    jwk_n: String,
    jwk_e: String,
}

impl RsaKey {
    fn generate() -> RsaKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        use rsa::Generate;
        let key = rsa::PrivateKey::generate();
        let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        // Big-endian without leading zero bytes (RFC 7518 §6.3.1).
        let b64 = |be: &[u8]| URL_SAFE_NO_PAD.encode(&be[be.iter().take_while(|b| **b == 0).count()..]);
        let public = key.to_public_key();
        let (jwk_n, jwk_e) = (b64(&public.n().as_ref().to_be_bytes()), b64(&public.e().to_be_bytes()));
        assert_eq!(jwk_e, "AQAB", "exponent 65537");
        RsaKey { der, jwk_n, jwk_e }
    }

    /// The public key as a JWK.
    fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": self.jwk_n, "e": self.jwk_e})
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_rsa_der(&self.der)).unwrap()
    }
}

fn claims(sub: Uuid, exp_in_s: i64) -> Value {
    json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() as i64 + exp_in_s, "iss": "test-issuer"})
}

/// A file of its own in a fresh temporary directory.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentmeter-tokens-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

struct Api {
    base: String,
    http: reqwest::Client,
    db: TestDb,
    keys: Arc<KeyStore>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    /// The API with end-user tokens configured by `flags`.
    async fn start(what: &str, flags: &[&str]) -> Api {
        let db = TestDb::fresh(what).await;
        let tenant = Uuid::new_v4();
        let url = clickhouse_url();
        let mut argv = vec!["agentmeter-api", "--clickhouse-url", &url, "--clickhouse-database", &db.name];
        argv.extend_from_slice(flags);
        let args = Args::parse_from(argv);
        let tokens = UserTokens::load(&args.user_token_settings().expect("token flags")).unwrap();
        let entry = |name: &str, role, key: &str, requires_user_token| KeyEntry {
            name: name.into(),
            tenant_id: tenant,
            role,
            sha256: hash_key(key),
            requires_user_token,
        };
        let keys = KeyStore::from_entries(vec![entry("admin", Role::Admin, ADMIN, false), entry("front", Role::Read, FRONT, true)])
            .unwrap()
            .with_user_tokens(Some(tokens));
        let keys = Arc::new(keys);
        let state = AppState::new(args.clickhouse.client(), keys.clone(), &args);
        let (base, stop) = serve(state.clone()).await;
        state.usage.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !state.usage.is_loaded() {
            assert!(Instant::now() < deadline, "usage never loaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Api { base, http: http_client(), db, keys, _stop: stop }
    }

    /// Waits until the key file has been checked twice more than now, so at
    /// least one check started after whatever was just written to it.
    async fn two_more_key_checks(&self) {
        let tokens = self.keys.user_tokens().expect("end-user tokens on");
        let target = tokens.checks() + 2;
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokens.checks() < target {
            assert!(Instant::now() < deadline, "the key file was not checked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The status of a usage request of the front key with `token`.
    async fn status_with(&self, token: &str) -> u16 {
        let path = format!("/v1/api/usage/current?organization_id={}", Uuid::nil());
        self.send(Method::GET, &path, Some(FRONT), Some(token), None).await.0
    }

    /// Polls until a request with `token` answers `status` (the key file is
    /// checked every second in these tests).
    async fn await_status(&self, token: &str, status: u16, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.status_with(token).await != status {
            assert!(Instant::now() < deadline, "{what}: never {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One request with `key` in X-API-Key (if any) and `token` as bearer
    /// (if any); the answer is checked against the OpenAPI document.
    async fn send(&self, method: Method, path: &str, key: Option<&str>, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method_name = method.as_str().to_owned();
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        crate::openapi_doc::assert_documented(&method_name, path, status, if v.is_string() { &Value::Null } else { &v });
        (status, v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_bind_usage_to_their_user_and_bad_ones_are_refused() {
    let (key, stranger) = (EcKey::generate(), EcKey::generate());
    let jwks = json!({"keys": [key.jwk("k1")]});
    let jwks_path = temp_file("jwks.json", jwks.to_string().as_bytes());
    let api = Api::start("tokens_es256", &["--jwt-jwks-file", jwks_path.to_str().unwrap()]).await;
    let (org, me, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // A limit for this user only: answers for the token's user show it.
    let (s, v) = api
        .send(
            Method::POST,
            "/v1/limits",
            Some(ADMIN),
            None,
            Some(
                json!({"subject": "user", "organization_id": org, "user_id": me, "metric": "messages", "period": "month", "max_value": 7}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let good = key.sign("k1", &claims(me, 600));

    // Accepted: current usage and the check are the token user's.
    let current = format!("/v1/api/usage/current?organization_id={org}");
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&good), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user_id"], me.to_string());
    assert_eq!(v["usage"]["messages"]["max"], 7);
    let (s, v) = api
        .send(
            Method::POST,
            "/v1/usage/check",
            Some(FRONT),
            Some(&good),
            Some(json!({"tokens": 1, "usage_type": "messages", "organization_id": org})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["max_limit"], 7, "the user's limit applies: {v}");
    // Naming the same user is fine.
    let (s, _) = api.send(Method::GET, &format!("{current}&user_id={me}"), Some(FRONT), Some(&good), None).await;
    assert_eq!(s, 200);

    // Mismatched: another user_id is 403, wherever it is named.
    let (s, v) = api.send(Method::GET, &format!("{current}&user_id={other}"), Some(FRONT), Some(&good), None).await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = api
        .send(
            Method::POST,
            "/v1/usage/check",
            Some(FRONT),
            Some(&good),
            Some(json!({"tokens": 1, "usage_type": "messages", "organization_id": org, "user_id": other})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api.send(Method::GET, &format!("/v1/organizations/{org}/usage/user/{other}"), Some(FRONT), Some(&good), None).await;
    assert_eq!(s, 403);
    for path in [
        format!("/v1/subscriptions/users/{other}/usage?organization_id={org}"),
        format!("/v1/subscriptions/users/{other}/usage/limits?organization_id={org}"),
        format!("/v1/api/usage/history?organization_id={org}&user_id={other}"),
    ] {
        let (s, v) = api.send(Method::GET, &path, Some(FRONT), Some(&good), None).await;
        assert_eq!(s, 403, "{path}: {v}");
    }
    let mine = format!("/v1/subscriptions/users/{me}/usage?organization_id={org}");
    let (s, v) = api.send(Method::GET, &mine, Some(FRONT), Some(&good), None).await;
    assert_eq!((s, v["user_id"].as_str()), (200, Some(me.to_string().as_str())), "{v}");

    // Expired (past the leeway): 401.
    let expired = key.sign("k1", &claims(me, -600));
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&expired), None).await;
    assert_eq!((s, v["detail"].as_str()), (401, Some("Token expired")), "{v}");

    // Forged: signed by a key not in the set, under the set's key id.
    let forged = stranger.sign("k1", &claims(me, 600));
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&forged), None).await;
    assert_eq!((s, v["detail"].as_str()), (401, Some("Invalid token")), "{v}");
    // Tampered: a valid token whose payload names another user.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims(other, 600).to_string());
    let (s, _) = api.send(Method::GET, &current, Some(FRONT), Some(&parts.join(".")), None).await;
    assert_eq!(s, 401);
    // HS256 signed with the public key's text is another algorithm: refused.
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims(me, 600), &EncodingKey::from_secret(jwks.to_string().as_bytes()).unwrap()).unwrap();
    let (s, _) = api.send(Method::GET, &current, Some(FRONT), Some(&confused), None).await;
    assert_eq!(s, 401);

    // The front key needs a token; the admin key works on its own.
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), None, None).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = api.send(Method::GET, &format!("{current}&user_id={other}"), Some(ADMIN), None, None).await;
    assert_eq!((s, v["user_id"].as_str()), (200, Some(other.to_string().as_str())), "{v}");
    // With tokens on, Authorization carries the token, never the key.
    let (s, _) = api.send(Method::GET, &current, None, Some(ADMIN), None).await;
    assert_eq!(s, 401);

    api.db.drop().await;
    std::fs::remove_dir_all(jwks_path.parent().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_from_a_secret_file() {
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let path = temp_file("secret", format!("{secret}\n").as_bytes());
    let api = Api::start("tokens_hs256", &["--jwt-hs256-secret-file", path.to_str().unwrap()]).await;
    let (org, me) = (Uuid::new_v4(), Uuid::new_v4());
    let sign = |secret: &str, exp_in_s| {
        encode(&Header::new(Algorithm::HS256), &claims(me, exp_in_s), &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    };
    let current = format!("/v1/usage/stats?organization_id={org}");
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&sign(&secret, 600)), None).await;
    assert_eq!((s, v["user_id"].as_str()), (200, Some(me.to_string().as_str())), "{v}");
    let (s, _) = api.send(Method::GET, &current, Some(FRONT), Some(&sign(&secret, -600)), None).await;
    assert_eq!(s, 401, "expired");
    let wrong = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let (s, _) = api.send(Method::GET, &current, Some(FRONT), Some(&sign(&wrong, 600)), None).await;
    assert_eq!(s, 401, "forged");
    api.db.drop().await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_with_audience_and_issuer_checks() {
    let (key, stranger) = (RsaKey::generate(), RsaKey::generate());
    let jwks = json!({"keys": [key.jwk("r1")]});
    let jwks_path = temp_file("jwks.json", jwks.to_string().as_bytes());
    let issuer = "https://login.example.test/";
    let flags = ["--jwt-jwks-file", jwks_path.to_str().unwrap(), "--jwt-audience", "usage-api,billing", "--jwt-issuer", issuer];
    let api = Api::start("tokens_rs256", &flags).await;
    let (org, me, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let current = format!("/v1/api/usage/current?organization_id={org}");

    // Accepted: RS256, an accepted audience (alone or in a list), the issuer.
    for aud in [json!("usage-api"), json!("billing"), json!(["someone-else", "usage-api"])] {
        let token = key.sign("r1", &json!({"sub": me, "exp": exp, "aud": aud, "iss": issuer}));
        let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&token), None).await;
        assert_eq!((s, v["user_id"].as_str()), (200, Some(me.to_string().as_str())), "aud {aud}: {v}");
        let (s, v) = api.send(Method::GET, &format!("{current}&user_id={other}"), Some(FRONT), Some(&token), None).await;
        assert_eq!(s, 403, "{v}");
    }

    // Refused with the body of any invalid token: another or no audience,
    // another or no issuer, a stranger's key under our kid, an unknown kid.
    let refused = [
        ("other aud", key.sign("r1", &json!({"sub": me, "exp": exp, "aud": "other-api", "iss": issuer}))),
        ("no aud", key.sign("r1", &json!({"sub": me, "exp": exp, "iss": issuer}))),
        ("other iss", key.sign("r1", &json!({"sub": me, "exp": exp, "aud": "usage-api", "iss": "https://evil.example.test/"}))),
        ("no iss", key.sign("r1", &json!({"sub": me, "exp": exp, "aud": "usage-api"}))),
        ("forged", stranger.sign("r1", &json!({"sub": me, "exp": exp, "aud": "usage-api", "iss": issuer}))),
        ("unknown kid", key.sign("r2", &json!({"sub": me, "exp": exp, "aud": "usage-api", "iss": issuer}))),
    ];
    for (what, token) in refused {
        let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&token), None).await;
        assert_eq!((s, &v), (401, &json!({"detail": "Invalid token"})), "{what}");
    }
    // Expired stays "Token expired".
    let expired = key.sign("r1", &json!({"sub": me, "exp": exp - 1800, "aud": "usage-api", "iss": issuer}));
    let (s, v) = api.send(Method::GET, &current, Some(FRONT), Some(&expired), None).await;
    assert_eq!((s, v["detail"].as_str()), (401, Some("Token expired")), "{v}");

    api.db.drop().await;
    std::fs::remove_dir_all(jwks_path.parent().unwrap()).unwrap();
}

/// Replaces `path` the way a deployment should: write aside, then rename.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_rotated_on_disk_applies_without_restart() {
    let (old, new) = (EcKey::generate(), EcKey::generate());
    let path = temp_file("jwks.json", json!({"keys": [old.jwk("old")]}).to_string().as_bytes());
    let api = Api::start("tokens_rotation", &["--jwt-jwks-file", path.to_str().unwrap(), "--jwt-keys-refresh-s", "1"]).await;
    let me = Uuid::new_v4();
    let (by_old, by_new) = (old.sign("old", &claims(me, 600)), new.sign("new", &claims(me, 600)));
    assert_eq!(api.status_with(&by_old).await, 200);
    assert_eq!(api.status_with(&by_new).await, 401, "not yet published");

    // Publish the new key next to the old one, then retire the old one.
    replace_file(&path, json!({"keys": [old.jwk("old"), new.jwk("new")]}).to_string().as_bytes());
    api.await_status(&by_new, 200, "the published key").await;
    assert_eq!(api.status_with(&by_old).await, 200, "both keys during the overlap");
    replace_file(&path, json!({"keys": [new.jwk("new")]}).to_string().as_bytes());
    api.await_status(&by_old, 401, "the retired key").await;
    assert_eq!(api.status_with(&by_new).await, 200);

    // A broken, an unusable and a missing file keep the keys in force.
    for (what, contents) in [
        ("not JSON", Some(&b"{\"keys\": ["[..])),
        ("no usable key", Some(&br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#[..])),
        ("missing", None),
    ] {
        match contents {
            Some(c) => replace_file(&path, c),
            None => std::fs::remove_file(&path).unwrap(),
        }
        api.two_more_key_checks().await;
        assert_eq!(api.status_with(&by_new).await, 200, "{what}: the previous keys stay");
        assert_eq!(api.status_with(&by_old).await, 401, "{what}");
    }

    // A valid file again: in force at the next check.
    replace_file(&path, json!({"keys": [old.jwk("old")]}).to_string().as_bytes());
    api.await_status(&by_old, 200, "the restored key").await;
    assert_eq!(api.status_with(&by_new).await, 401);

    api.db.drop().await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
