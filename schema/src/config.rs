//! Settings every binary shares: where ClickHouse is, which database, and the
//! Kafka topic names of DESIGN.md. One definition, flattened into each
//! binary's clap `Args`, so `--help` and the environment variables agree.

use clap::Args;

/// Topic of tool-call events.
pub const TOPIC_TOOL_CALLS: &str = "agentmeter.tool-calls";
/// Topic of agent-execution events.
pub const TOPIC_AGENT_EXECUTIONS: &str = "agentmeter.agent-executions";
/// Topic where events that fail validation are sent, with the reason.
pub const TOPIC_DEAD_LETTER: &str = "agentmeter.dead-letter";

/// How to reach ClickHouse.
#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP interface URL.
    #[arg(long = "clickhouse-url", env = "AGENTMETER_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub url: String,
    /// Database holding the agentmeter tables.
    #[arg(long = "clickhouse-database", env = "AGENTMETER_CLICKHOUSE_DATABASE", default_value = "agentmeter")]
    pub database: String,
    /// ClickHouse user.
    #[arg(long = "clickhouse-user", env = "AGENTMETER_CLICKHOUSE_USER", default_value = "default")]
    pub user: String,
    /// ClickHouse password (empty for none).
    #[arg(long = "clickhouse-password", env = "AGENTMETER_CLICKHOUSE_PASSWORD", default_value = "", hide_env_values = true)]
    pub password: String,
}

impl ClickHouseArgs {
    /// Settings for a given URL and database, with the default user.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self { url: url.into(), database: database.into(), user: "default".into(), password: String::new() }
    }

    /// A client bound to the configured database (LZ4 compression on, the
    /// crate's default).
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }

    /// A client that is not bound to a database (to create it).
    pub fn server_client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default().with_url(&self.url).with_user(&self.user);
        if !self.password.is_empty() {
            client = client.with_password(&self.password);
        }
        client
    }
}
