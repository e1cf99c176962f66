//! What every integration test of the API needs, in one place: the local
//! ClickHouse, a fresh migrated database per test, the API served on an
//! ephemeral port, API keys, and rows written into a raw table.

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

/// Inserts `rows` into `table` in one INSERT.
pub async fn insert<R: clickhouse::RowOwned + clickhouse::RowWrite>(db: &clickhouse::Client, table: &str, rows: &[R]) {
    let mut insert = db.insert::<R>(table).await.unwrap();
    for r in rows {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();
}
