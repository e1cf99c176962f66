//! Analytics endpoints against the local ClickHouse: known tool-call
//! events for two tenants are inserted into the raw table of a fresh
//! database (the materialized views fill the rollups), the API is started
//! on an ephemeral port, and every answer is compared with a computation
//! over the same events done here in Rust, and validated against the
//! Caylex schemas of `shared/spec/caylex-openapi.json`.

mod endpoints;
mod fixture;
mod grafana;
mod ops;
mod org_usage;
mod queries_counted;
mod rollups;
pub mod schema;
mod tenancy;
mod user_rollups;
mod validation;

use std::sync::Arc;

use agentmeter_api::auth::Role;
use agentmeter_api::{AppState, Args};
use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
use clap::Parser;
use serde_json::Value;
use uuid::Uuid;

use crate::common::{http_client, insert, key_store, serve, TestDb};

pub const KEY_A: &str = "am_test_analytics_a";
pub const KEY_B: &str = "am_test_analytics_b";
pub const KEY_ADMIN_A: &str = "am_test_analytics_admin_a";

pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub server: clickhouse::Client,
    pub db: clickhouse::Client,
    pub db_name: String,
    pub tenant_a: Uuid,
    pub tenant_b: Uuid,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl App {
    /// A fresh database and the API on 127.0.0.1:0; `extra` are flags.
    pub async fn start(what: &str, extra: &[&str]) -> App {
        Self::start_reading(what, None, extra).await
    }

    /// [`App::start`], with the API reading ClickHouse at `clickhouse_url`
    /// instead of the test database's server (the test database is still
    /// made there).
    pub async fn start_reading(what: &str, clickhouse_url: Option<&str>, extra: &[&str]) -> App {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
        let test_db = TestDb::fresh(what).await;
        let url = clickhouse_url.map_or_else(|| test_db.url.clone(), str::to_owned);
        let db_name = test_db.name.clone();
        let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
        let keys = key_store(&[
            ("a", tenant_a, Role::Read, KEY_A),
            ("b", tenant_b, Role::Read, KEY_B),
            ("admin-a", tenant_a, Role::Admin, KEY_ADMIN_A),
        ]);
        let mut argv = vec!["agentmeter-api", "--clickhouse-url", &url, "--clickhouse-database", &db_name];
        argv.extend_from_slice(extra);
        let args = Args::parse_from(argv);
        let db = args.clickhouse.client();
        let state = AppState::new(db.clone(), Arc::new(keys), &args);
        let (base, stop) = serve(state).await;
        App { base, http: http_client(), server: test_db.server, db, db_name, tenant_a, tenant_b, _stop: stop }
    }

    pub async fn drop_db(self) {
        self.server.query(&format!("DROP DATABASE IF EXISTS `{}`", self.db_name)).execute().await.unwrap();
    }

    pub async fn insert_calls(&self, rows: &[ToolCallRow]) {
        insert(&self.db, "tool_calls", rows).await;
    }

    pub async fn insert_executions(&self, rows: &[AgentExecutionRow]) {
        insert(&self.db, "agent_executions", rows).await;
    }

    /// GET with a key; returns status and JSON body (Null if not JSON).
    pub async fn get(&self, key: Option<&str>, path_and_query: &str) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{}", self.base, path_and_query));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        crate::openapi_doc::assert_documented("GET", path_and_query, status, &body);
        (status, body)
    }

    /// GET expecting 200; returns the body.
    pub async fn ok(&self, key: &str, path_and_query: &str) -> Value {
        let (status, body) = self.get(Some(key), path_and_query).await;
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        body
    }
}

/// Parses an RFC 3339 field of a JSON object.
pub fn time_of(v: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    let s = v[field].as_str().unwrap_or_else(|| panic!("{field} missing in {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc)
}

/// An answer with the given id and every timestamp blanked out, so that two
/// answers asked at slightly different instants about different ids compare.
pub fn shape(v: &Value, id: Uuid) -> Value {
    match v {
        Value::String(s) if s == &id.to_string() => Value::String("<id>".into()),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Value::String("<time>".into()),
        Value::Number(n) if n.as_i64().is_some_and(|t| t > 1_000_000_000_000) => Value::String("<time>".into()),
        Value::Array(a) => Value::Array(a.iter().map(|x| shape(x, id)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), shape(x, id))).collect()),
        other => other.clone(),
    }
}
