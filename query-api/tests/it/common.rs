//! What every integration test of the API needs, in one place: the local
//! ClickHouse, a fresh migrated database per test, the API served on an
//! ephemeral port, API keys, an HTTP client, and rows written into a raw
//! table.

use agentmeter_api::auth::{hash_key, KeyEntry, KeyStore, Role};
use agentmeter_api::AppState;
use agentmeter_schema::config::ClickHouseArgs;
use uuid::Uuid;

pub fn clickhouse_url() -> String {
    std::env::var("AGENTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A database of its own for one test, migrated to the latest version.
pub struct TestDb {
    pub url: String,
    pub name: String,
    /// Client without a default database (for `DROP DATABASE`).
    pub server: clickhouse::Client,
    /// Client bound to the database.
    pub client: clickhouse::Client,
}

impl TestDb {
    pub async fn fresh(what: &str) -> TestDb {
        let url = clickhouse_url();
        let name = format!("agentmeter_test_{what}_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let args = ClickHouseArgs::new(&url, &name);
        let server = args.server_client();
        agentmeter_schema::migrations::migrate(&server, &name).await.expect("migrate");
        TestDb { client: args.client(), url, name, server }
    }

    pub async fn drop(&self) {
        self.server.query(&format!("DROP DATABASE IF EXISTS `{}`", self.name)).execute().await.unwrap();
    }
}

/// The API keys of a test, `(name, tenant, role, key)` each (none asks for
/// an end-user token).
pub fn key_store(keys: &[(&str, Uuid, Role, &str)]) -> KeyStore {
    let entries = keys
        .iter()
        .map(|&(name, tenant_id, role, key)| KeyEntry {
            name: name.into(),
            tenant_id,
            role,
            sha256: hash_key(key),
            requires_user_token: false,
        })
        .collect();
    KeyStore::from_entries(entries).unwrap()
}

/// Serves the API on 127.0.0.1:0 until the returned sender is sent to or
/// dropped; returns its base URL.
pub async fn serve(state: AppState) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agentmeter_api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// The HTTP client of a test. The API closes a keep-alive connection that
/// stays idle for its header read timeout (10 s by default); a client that
/// reuses a pooled connection at that very moment gets an aborted request.
/// Tests pause between requests for as long as events take to arrive (a
/// Kafka round trip, a hold's lifetime), so connections idle for 5 s are
/// not reused, well before the server could be closing them.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(5)).build().expect("HTTP client")
}

/// Inserts `rows` into `table` in one INSERT.
pub async fn insert<R: clickhouse::RowOwned + clickhouse::RowWrite>(db: &clickhouse::Client, table: &str, rows: &[R]) {
    let mut insert = db.insert::<R>(table).await.unwrap();
    for r in rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
}
