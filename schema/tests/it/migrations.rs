//! Migrations against the local ClickHouse: every table and view exists,
//! and applying twice, or twice at the same time, leaves the same schema.

use agentmeter_schema::config::ClickHouseArgs;
use agentmeter_schema::migrations;
use clickhouse::Client;

fn clickhouse(db: &str) -> ClickHouseArgs {
    let url = std::env::var("AGENTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    ClickHouseArgs::new(url, db)
}

fn unique_db(prefix: &str) -> String {
    format!("agentmeter_test_{prefix}_{}", uuid::Uuid::new_v4().simple())
}

async fn schema_of(db: &Client) -> Vec<(String, String, String)> {
    db.query("SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all::<(String, String, String)>()
        .await
        .unwrap()
}

/// Two runners migrate the database at once (as two replicas starting
/// together would); both must succeed.
async fn migrate_concurrently(ch: &ClickHouseArgs) {
    let (first, second) = (ch.server_client(), ch.server_client());
    let (a, b) = tokio::join!(migrations::migrate(&first, &ch.database), migrations::migrate(&second, &ch.database));
    a.unwrap();
    b.unwrap();
}

/// Inserts `rows` into `table` in one INSERT.
async fn insert_rows<R: clickhouse::RowOwned + clickhouse::RowWrite>(db: &Client, table: &str, rows: Vec<R>) {
    let mut insert = db.insert::<R>(table).await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
}

/// Undoes every migration newer than `version` with its own
/// [`Migration::rollback`](agentmeter_schema::migrations::Migration)
/// statements, newest first, and forgets them in `schema_migrations`: the
/// next migrate runs them again, their backfills included.
async fn roll_back_to(db: &Client, version: u32) {
    let mut newer: Vec<_> = migrations::all().into_iter().filter(|m| m.version() > version).collect();
    newer.sort_by_key(|m| std::cmp::Reverse(m.version()));
    for m in &newer {
        for sql in m.rollback().split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.query(sql).with_option("mutations_sync", "1").execute().await.unwrap();
        }
    }
    db.query("ALTER TABLE schema_migrations DELETE WHERE version > ?")
        .bind(version)
        .with_option("mutations_sync", "1")
        .execute()
        .await
        .unwrap();
}

async fn drop_db(ch: &ClickHouseArgs) {
    ch.server_client().query(&format!("DROP DATABASE IF EXISTS `{}`", ch.database)).execute().await.unwrap();
}

#[tokio::test]
async fn migrate_twice_creates_every_table_once() {
    let ch = clickhouse(&unique_db("twice"));
    let first = migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(first.applied.len(), migrations::all().len());
    let before = schema_of(&ch.client()).await;
    let second = migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, migrations::all().len());
    assert_eq!(schema_of(&ch.client()).await, before);
    let names: Vec<&str> = before.iter().map(|(n, _, _)| n.as_str()).collect();
    for table in [
        "agent_executions",
        "agent_executions_1m",
        "agent_executions_1m_mv",
        "agent_executions_1m_unpriced_mv",
        "dimension_names",
        "dimension_names_calls_mv",
        "dimension_names_executions_mv",
        "plan_limits",
        "queries_1m",
        "queries_1m_calls_mv",
        "queries_1m_executions_mv",
        "rollup_backfills",
        "schema_migrations",
        "tool_call_queries_1h",
        "tool_call_queries_1h_mv",
        "tool_calls",
        "tool_calls_1h",
        "tool_calls_1h_mv",
        "tool_calls_1m",
        "tool_calls_1m_mv",
        "tool_calls_tenant_1h",
        "tool_calls_tenant_1h_mv",
        "tool_calls_tenant_kind_1h",
        "tool_calls_tenant_kind_1h_mv",
        "tool_calls_error_type_1h",
        "tool_calls_error_type_1h_mv",
        "agent_executions_executor_1h",
        "agent_executions_executor_1h_mv",
        "tool_calls_tenant_1m",
        "tool_calls_tenant_1m_mv",
        "tool_calls_tenant_5m",
        "tool_calls_tenant_5m_mv",
        "query_counts_tenant_5m",
        "query_counts_tenant_5m_mv",
    ] {
        assert!(names.contains(&table), "{table} missing from {names:?}");
    }
    let applied = migrations::applied_versions(&ch.client()).await.unwrap();
    assert_eq!(applied, migrations::all().iter().map(|m| m.version()).collect::<Vec<_>>());
    drop_db(&ch).await;
}

#[tokio::test]
async fn concurrent_migrations_leave_one_schema() {
    let ch = clickhouse(&unique_db("concurrent"));
    migrate_concurrently(&ch).await;
    let reference = clickhouse(&unique_db("reference"));
    migrations::migrate(&reference.server_client(), &reference.database).await.unwrap();
    let strip =
        |rows: Vec<(String, String, String)>, db: &str| rows.into_iter().map(|(n, e, q)| (n, e, q.replace(db, "DB"))).collect::<Vec<_>>();
    assert_eq!(strip(schema_of(&ch.client()).await, &ch.database), strip(schema_of(&reference.client()).await, &reference.database));
    let recorded: u64 = ch.client().query("SELECT count() FROM schema_migrations FINAL").fetch_one().await.unwrap();
    assert_eq!(recorded, migrations::all().len() as u64);
    drop_db(&ch).await;
    drop_db(&reference).await;
}

#[tokio::test]
async fn rollups_equal_raw_totals_and_retried_inserts_count_once() {
    use agentmeter_schema::rows::ToolCallRow;
    let ch = clickhouse(&unique_db("rollup"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    let tenant = uuid::Uuid::new_v4();
    let rows: Vec<ToolCallRow> = (0..500)
        .map(|i| {
            let raw = serde_json::json!({
                "event_id": uuid::Uuid::new_v4(), "occurred_at": chrono::Utc::now().timestamp_millis() - 86_400_000 + i * 7_000,
                "tenant_id": tenant, "tool_name": format!("tool_{}", i % 7), "latency_ms": (i % 100) as f64,
                "success": i % 10 != 0, "error_type": if i % 10 == 0 { Some("timeout") } else { None },
                "query_id": uuid::Uuid::from_u128((i / 3) as u128 + 1),
            });
            ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), chrono::Utc::now()).unwrap())
        })
        .collect();
    // The same block inserted twice with one deduplication token: counted once, in raw and rollup.
    for _ in 0..2 {
        let mut insert = db
            .clone()
            .with_option("insert_deduplication_token", "rollup-test-block-1")
            .with_option("deduplicate_blocks_in_dependent_materialized_views", "1")
            .insert::<ToolCallRow>("tool_calls")
            .await
            .unwrap();
        for row in &rows {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    let raw: (u64, u64, u64) = db
        .query("SELECT count(), countIf(NOT success), uniqExact(query_id) FROM tool_calls WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    let rollup: (u64, u64, u64) = db
        .query("SELECT sum(calls), sum(errors), uniqExactIfMerge(queries) FROM tool_calls_1m WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw, (500, 50, 167));
    assert_eq!(rollup, raw);
    // Every tool-call rollup counts the retried block once.
    for table in ["tool_calls_1h", "tool_calls_tenant_1h", "tool_calls_tenant_1m"] {
        assert_eq!(calls_and_errors(&db, table, tenant).await, (raw.0, raw.1), "{table}");
    }
    drop_db(&ch).await;
}

/// Rows in `tool_calls` before 0004 and 0005 created their views reach the hourly
/// rollups through the backfill, exactly once even when the migration runs
/// twice at the same time and once more after that (a rerun after a crash
/// before the migration was recorded); rows inserted afterwards arrive
/// through the views.
#[tokio::test]
async fn hourly_rollups_backfill_rows_inserted_before_them_once() {
    use agentmeter_schema::rows::ToolCallRow;
    let ch = clickhouse(&unique_db("backfill"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to version 3: no hourly views, empty hourly tables (0004 and 0005),
    // no query-log views, empty query_events (0006), no query-minute views,
    // empty queries_1m (0007), no unpriced view (0010), no per-question views
    // and empty per-question rollups (0011), no 5-minute views and empty
    // 5-minute rollups (0012), no user views and empty user rollups (0013),
    // no hourly execution view and an empty hourly execution rollup (0016),
    // no tenant-hours-by-kind view and an empty table (0017), no
    // error-type-hours view and an empty table (0018), no executor-hours
    // view and an empty table (0019).
    let forget_0004 = || async {
        db.query("TRUNCATE TABLE schema_migrations").execute().await.unwrap();
        db.query("INSERT INTO schema_migrations (version, name) VALUES (1, 'raw_tables'), (2, 'minute_rollups'), (3, 'plan_limits')")
            .execute()
            .await
            .unwrap();
    };
    for sql in [
        "DROP VIEW tool_calls_1h_mv",
        "DROP VIEW tool_call_queries_1h_mv",
        "DROP VIEW tool_calls_tenant_1h_mv",
        "DROP VIEW tool_calls_tenant_1m_mv",
        "DROP VIEW queries_1m_calls_mv",
        "DROP VIEW queries_1m_executions_mv",
        "DROP VIEW agent_executions_1m_unpriced_mv",
        "DROP VIEW query_counts_1h_mv",
        "DROP VIEW query_counts_1m_mv",
        "DROP VIEW tool_calls_server_1h_mv",
        "DROP VIEW tool_calls_navigator_1h_mv",
        "DROP VIEW tool_calls_tool_1h_mv",
        "DROP VIEW tool_calls_tenant_5m_mv",
        "DROP VIEW query_counts_tenant_5m_mv",
        "DROP VIEW agent_executions_1h_mv",
        "TRUNCATE TABLE agent_executions_1h",
        "DROP VIEW tool_calls_tenant_kind_1h_mv",
        "TRUNCATE TABLE tool_calls_tenant_kind_1h",
        "DROP VIEW tool_calls_error_type_1h_mv",
        "TRUNCATE TABLE tool_calls_error_type_1h",
        "DROP VIEW agent_executions_executor_1h_mv",
        "TRUNCATE TABLE agent_executions_executor_1h",
        "TRUNCATE TABLE tool_calls_tenant_5m",
        "TRUNCATE TABLE query_counts_tenant_5m",
        "TRUNCATE TABLE query_counts_1h",
        "TRUNCATE TABLE query_counts_1m",
        "TRUNCATE TABLE tool_calls_server_1h",
        "TRUNCATE TABLE tool_calls_navigator_1h",
        "TRUNCATE TABLE tool_calls_tool_1h",
        "TRUNCATE TABLE tool_calls_1h",
        "TRUNCATE TABLE tool_call_queries_1h",
        "TRUNCATE TABLE tool_calls_tenant_1h",
        "TRUNCATE TABLE tool_calls_tenant_1m",
        "DROP VIEW query_events_tool_calls_mv",
        "DROP VIEW query_events_executions_mv",
        "TRUNCATE TABLE query_events",
        "TRUNCATE TABLE queries_1m",
        "DROP VIEW dimension_names_calls_mv",
        "DROP VIEW dimension_names_executions_mv",
        "TRUNCATE TABLE dimension_names",
        "DROP VIEW tool_calls_user_1h_mv",
        "DROP VIEW agent_executions_user_1h_mv",
        "DROP VIEW project_users_1mon_calls_mv",
        "DROP VIEW project_users_1mon_executions_mv",
        "DROP VIEW project_servers_1mon_mv",
        "TRUNCATE TABLE tool_calls_user_1h",
        "TRUNCATE TABLE agent_executions_user_1h",
        "TRUNCATE TABLE project_users_1mon",
        "TRUNCATE TABLE project_servers_1mon",
        "TRUNCATE TABLE rollup_backfills",
    ] {
        db.query(sql).execute().await.unwrap();
    }
    forget_0004().await;
    let tenant = uuid::Uuid::new_v4();
    let rows = |from: i64, n: i64| -> Vec<ToolCallRow> {
        (from..from + n)
            .map(|i| {
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": chrono::Utc::now().timestamp_millis() - 3 * 86_400_000 + i * 60_000,
                    "tenant_id": tenant, "tool_name": format!("tool_{}", i % 5), "latency_ms": (i % 50) as f64,
                    "success": i % 8 != 0, "error_type": if i % 8 == 0 { Some("upstream") } else { None },
                    "query_id": uuid::Uuid::from_u128((i / 4) as u128 + 1),
                    "call_kind": if i % 9 == 0 { "suggest_tools" } else { "tool" },
                });
                ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), chrono::Utc::now()).unwrap())
            })
            .collect()
    };
    let insert = |rows: Vec<ToolCallRow>| {
        let db = db.clone();
        async move {
            let mut insert = db.insert::<ToolCallRow>("tool_calls").await.unwrap();
            for row in &rows {
                insert.write(row).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    };
    insert(rows(0, 300)).await;
    migrate_concurrently(&ch).await;
    forget_0004().await;
    let rerun = migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(rerun.applied.len(), migrations::all().len() - 3);
    insert(rows(300, 200)).await;

    let raw: (u64, u64, u64, u64) = db
        .query(
            "SELECT count(), countIf(NOT success), uniqExactIf(query_id, call_kind = 'tool'), uniqExact(query_id)
             FROM tool_calls WHERE tenant_id = toUUID(?)",
        )
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    let queries: (u64, u64) = db
        .query("SELECT uniqExactIf(query_id, tool_calls > 0), uniqExact(query_id) FROM tool_call_queries_1h WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    let calls_in_queries: u64 = db
        .query("SELECT sum(tool_calls) + sum(proxy_calls) FROM tool_call_queries_1h WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw.0, 500);
    assert_eq!(raw.1, 63); // i % 8 == 0 for i in 0..500
    for table in ["tool_calls_1h", "tool_calls_tenant_1h", "tool_calls_tenant_1m", "tool_calls_tenant_kind_1h", "tool_calls_error_type_1h"]
    {
        assert_eq!(calls_and_errors(&db, table, tenant).await, (raw.0, raw.1), "{table}");
    }
    assert_eq!(queries, (raw.2, raw.3));
    let minutes: (u64, u64, u64) = db
        .query("SELECT uniqExactIf(query_id, tool_calls > 0), uniqExact(query_id), sum(tool_calls) + sum(proxy_calls) FROM queries_1m WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(minutes, (raw.2, raw.3, raw.0), "queries_1m: backfilled and fed by the view, each row once");
    assert_eq!(raw.3, 125);
    assert_eq!(calls_in_queries, 500);
    let query_events: (u64, u64) = db
        .query("SELECT count(), uniqExact(query_id) FROM query_events WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(query_events, (500, 125), "query_events: every tool call of a query once");
    drop_db(&ch).await;
}

/// Two runners record a backfill cutoff at the same time, and the one
/// whose `now64` is earlier commits after the other has read the cutoff
/// and copied: its record must not stand, or a rerun (or that runner)
/// copies again under the earlier cutoff and counts the rows twice. The
/// late record is made here by hand, as that runner would make it.
#[tokio::test]
async fn a_late_cutoff_record_of_a_concurrent_runner_does_not_copy_twice() {
    use agentmeter_schema::rows::ToolCallRow;
    let ch = clickhouse(&unique_db("late_cutoff"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to before 0005's hourly view (the rollback drops the table: a new one, a new UUID).
    for sql in [
        "DROP VIEW tool_calls_tenant_1h_mv",
        "DROP TABLE tool_calls_tenant_1h",
        "ALTER TABLE rollup_backfills DELETE WHERE view = 'tool_calls_tenant_1h_mv'",
        "ALTER TABLE schema_migrations DELETE WHERE version > 4",
    ] {
        db.query(sql).with_option("mutations_sync", "1").execute().await.unwrap();
    }
    let tenant = uuid::Uuid::new_v4();
    let now = chrono::Utc::now();
    let calls: Vec<ToolCallRow> = (0..300)
        .map(|i: i64| {
            let raw = serde_json::json!({
                "event_id": uuid::Uuid::new_v4(), "occurred_at": now.timestamp_millis() - 86_400_000 + i * 60_000,
                "tenant_id": tenant, "tool_name": "search", "latency_ms": 5.0, "success": i % 4 != 0,
            });
            ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), now).unwrap())
        })
        .collect();
    insert_rows(&db, "tool_calls", calls).await;
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(calls_and_errors(&db, "tool_calls_tenant_1h", tenant).await, (300, 75));

    // The other runner's record, an hour earlier, committed now.
    let target: String = db
        .query("SELECT toString(uuid) FROM system.tables WHERE database = currentDatabase() AND name = 'tool_calls_tenant_1h'")
        .fetch_one()
        .await
        .unwrap();
    db.query("INSERT INTO rollup_backfills (view, cutoff) VALUES ('tool_calls_tenant_1h_mv', now64(3) - INTERVAL 1 HOUR)")
        .with_option("insert_deduplicate", "1")
        .with_option("insert_deduplication_token", format!("cutoff:tool_calls_tenant_1h_mv:{target}"))
        .execute()
        .await
        .unwrap();
    let records: u64 = db.query("SELECT count() FROM rollup_backfills WHERE view = 'tool_calls_tenant_1h_mv'").fetch_one().await.unwrap();
    assert_eq!(records, 1, "one cutoff per view and target, whoever commits first");

    // A rerun of every migration after 0004 (as after a crash before they were recorded).
    db.query("ALTER TABLE schema_migrations DELETE WHERE version > 4").with_option("mutations_sync", "1").execute().await.unwrap();
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(calls_and_errors(&db, "tool_calls_tenant_1h", tenant).await, (300, 75), "each row copied once");
    drop_db(&ch).await;
}

/// 0010: executions whose cost is not known are stored with
/// `cost_known = false` and counted apart in `agent_executions_1m`, by a
/// view whose backfill copies the unpriced rows stored before it existed
/// exactly once (two runners at once, then a rerun), while the cost sums
/// stay the exact sums of the known costs.
#[tokio::test]
async fn unpriced_executions_are_counted_apart_and_backfilled_once() {
    use agentmeter_schema::rows::AgentExecutionRow;
    let ch = clickhouse(&unique_db("unpriced"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // The column exists but not the view: what a worker of this version
    // wrote between the two statements of the migration.
    let forget_0010 = || async {
        db.query("TRUNCATE TABLE schema_migrations").execute().await.unwrap();
        for m in migrations::all().iter().filter(|m| m.version() != 10) {
            db.query("INSERT INTO schema_migrations (version, name) VALUES (?, ?)")
                .bind(m.version())
                .bind(m.name())
                .execute()
                .await
                .unwrap();
        }
    };
    for sql in ["DROP VIEW agent_executions_1m_unpriced_mv", "TRUNCATE TABLE rollup_backfills"] {
        db.query(sql).execute().await.unwrap();
    }
    forget_0010().await;
    let tenant = uuid::Uuid::new_v4();
    let insert = |costs: Vec<Option<&'static str>>| {
        let db = db.clone();
        async move {
            let mut insert = db.insert::<AgentExecutionRow>("agent_executions").await.unwrap();
            for cost in costs {
                let mut raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": chrono::Utc::now().timestamp_millis() - 3_600_000,
                    "tenant_id": tenant, "input_tokens": 10, "model": "m",
                });
                match cost {
                    Some(c) => raw["cost_usd"] = serde_json::json!(c),
                    None => raw["cost_known"] = serde_json::json!(false),
                }
                let e = agentmeter_schema::parse_agent_execution(raw.to_string().as_bytes(), chrono::Utc::now()).unwrap();
                insert.write(&AgentExecutionRow::from(&e)).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    };
    insert(vec![None, Some("0.5"), None]).await;
    migrate_concurrently(&ch).await;
    forget_0010().await;
    let rerun = migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(rerun.applied, vec![(10, "unpriced_executions")]);
    insert(vec![Some("0.25"), None, Some("0")]).await;

    let raw: (u64, u64, String) = db
        .query("SELECT count(), countIf(NOT cost_known), toString(sum(cost_usd)) FROM agent_executions WHERE tenant_id = toUUID(?)")
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw, (6, 3, "0.75".to_owned()));
    let rollup: (u64, u64, String, u64) = db
        .query(
            "SELECT toUInt64(sum(executions)), toUInt64(sum(unpriced_executions)), toString(sum(cost_usd)), toUInt64(sum(input_tokens)) \
             FROM agent_executions_1m WHERE tenant_id = toUUID(?)",
        )
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(rollup, (6, 3, "0.75".to_owned(), 60), "every execution once, the unpriced ones counted apart, each once");
    drop_db(&ch).await;
}

#[tokio::test]
async fn names_backfill_keeps_the_latest_name_per_tenant() {
    use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
    let ch = clickhouse(&unique_db("names"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to version 7: no name views, empty dimension_names.
    for sql in [
        "DROP VIEW dimension_names_calls_mv",
        "DROP VIEW dimension_names_executions_mv",
        "TRUNCATE TABLE dimension_names",
        "ALTER TABLE rollup_backfills DELETE WHERE view LIKE 'dimension_names%'",
        "ALTER TABLE schema_migrations DELETE WHERE version = 8",
    ] {
        db.query(sql).execute().await.unwrap();
    }
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (server, project) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let now = chrono::Utc::now().timestamp_millis();
    let call = |tenant: uuid::Uuid, minutes_ago: i64, server_name: &str, project_name: &str| {
        let raw = serde_json::json!({
            "event_id": uuid::Uuid::new_v4(), "occurred_at": now - minutes_ago * 60_000, "tenant_id": tenant,
            "server_id": server, "server_name": server_name, "project_id": project, "project_name": project_name,
            "tool_name": "search", "latency_ms": 1.0, "success": true,
        });
        ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), chrono::Utc::now()).unwrap())
    };
    let insert_calls = |rows: Vec<ToolCallRow>| {
        let db = db.clone();
        async move {
            let mut insert = db.insert::<ToolCallRow>("tool_calls").await.unwrap();
            for row in &rows {
                insert.write(row).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    };
    // Before the views: tenant A renames its server; tenant B names the same ids otherwise.
    insert_calls(vec![call(a, 30, "github-old", "Alpha"), call(a, 20, "github", "Alpha"), call(b, 10, "b-server", "Beta")]).await;
    let rerun = migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    assert_eq!(rerun.applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![8]);
    // After: an older event (sent late) does not undo the rename; an execution renames the project.
    insert_calls(vec![call(a, 40, "github-older", "Alpha")]).await;
    let exec = serde_json::json!({
        "event_id": uuid::Uuid::new_v4(), "occurred_at": now - 5 * 60_000, "tenant_id": a,
        "project_id": project, "project_name": "Alpha renamed",
    });
    let exec = AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(exec.to_string().as_bytes(), chrono::Utc::now()).unwrap());
    let mut insert = db.insert::<AgentExecutionRow>("agent_executions").await.unwrap();
    insert.write(&exec).await.unwrap();
    insert.end().await.unwrap();

    let names = |tenant: uuid::Uuid| {
        let db = db.clone();
        async move {
            db.query(
                "SELECT toString(kind), toString(argMaxMerge(name)) FROM dimension_names
                 WHERE tenant_id = toUUID(?) GROUP BY kind, id ORDER BY kind",
            )
            .bind(tenant.to_string())
            .fetch_all::<(String, String)>()
            .await
            .unwrap()
        }
    };
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(names(a).await, vec![s("project", "Alpha renamed"), s("server", "github")]);
    assert_eq!(names(b).await, vec![s("project", "Beta"), s("server", "b-server")]);
    drop_db(&ch).await;
}

/// `(sum(calls), sum(errors))` of a tool-call rollup for one tenant.
async fn calls_and_errors(db: &clickhouse::Client, table: &str, tenant: uuid::Uuid) -> (u64, u64) {
    db.query(&format!("SELECT sum(calls), sum(errors) FROM {table} WHERE tenant_id = toUUID(?)"))
        .bind(tenant.to_string())
        .fetch_one()
        .await
        .unwrap()
}

/// 0011's per-question rollups: rows already in the raw tables when the
/// migration runs (twice at the same time) are backfilled once, rows
/// inserted afterwards arrive through the views, and every figure equals
/// the raw tables' hour by hour (queries: one per `navigator_query`
/// execution, zero-call queries included; per-server query sets exact).
#[tokio::test]
async fn question_rollups_backfill_once_and_equal_the_raw_tables() {
    use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
    let ch = clickhouse(&unique_db("questions"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to the version before 0011: its views and tables and every
    // newer migration's gone, so that migrating again backfills them.
    roll_back_to(&db, 10).await;
    let tenant = uuid::Uuid::new_v4();
    let start_ms = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
    let now = chrono::Utc::now();
    let query = |q: i64| uuid::Uuid::from_u128(q as u128 + 1);
    let navigator = |q: i64| uuid::Uuid::from_u128(1000 + (q % 3) as u128);
    // Query q runs at start + q minutes 20 s: its execution (every third
    // one is another kind of run, not a query), then q % 4 calls (zero for
    // every fourth query), one of them to a second server.
    let executions = |from: i64, n: i64| -> Vec<AgentExecutionRow> {
        (from..from + n)
            .map(|q| {
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + q * 60_000 + 20_000, "tenant_id": tenant,
                    "execution_id": query(q), "execution_kind": if q % 3 == 2 { "agent_chat" } else { "navigator_query" },
                    "billable": true, "input_tokens": 1, "output_tokens": 1, "cost_usd": "0.000001",
                    "navigator_id": navigator(q), "navigator_instance_id": navigator(q), "project_id": navigator(q),
                });
                AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    let calls = |from: i64, n: i64| -> Vec<ToolCallRow> {
        (from..from + n)
            .flat_map(|q| (0..q % 4).map(move |k| (q, k)))
            .map(|(q, k)| {
                let server = uuid::Uuid::from_u128(2000 + u128::from(k == 2));
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + q * 60_000 + 21_000 + k * 15_000, "tenant_id": tenant,
                    "query_id": query(q), "tool_name": "search", "latency_ms": (q % 50) as f64, "success": (q + k) % 7 != 0,
                    "call_kind": if k == 1 { "suggest_tools" } else { "tool" },
                    "server_id": server, "server_instance_id": server, "server_name": format!("srv-{k}"),
                    "navigator_id": navigator(q), "navigator_instance_id": navigator(q), "project_id": navigator(q),
                });
                ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    insert_rows(&db, "tool_calls", calls(0, 600)).await;
    insert_rows(&db, "agent_executions", executions(0, 600)).await;
    migrate_concurrently(&ch).await;
    insert_rows(&db, "tool_calls", calls(600, 400)).await;
    insert_rows(&db, "agent_executions", executions(600, 400)).await;

    let t = tenant.to_string();
    let rows = |sql: &str| db.query(sql).bind(t.clone()).fetch_all::<(u32, String, u64, u64, u64)>();
    // Queries per hour and navigator: executions of kind navigator_query.
    let raw = rows(
        "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, toString(navigator_id) AS k, toUInt64(uniqExact(execution_id)), toUInt64(0), toUInt64(0)
         FROM agent_executions WHERE tenant_id = toUUID(?) AND execution_kind = 'navigator_query' GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    assert_eq!(raw.iter().map(|r| r.2).sum::<u64>(), 667); // q % 3 != 2 for q in 0..1000
    for (table, time) in [("query_counts_1h", "hour"), ("query_counts_1m", "toStartOfHour(minute)")] {
        let got = rows(&format!(
            "SELECT toUInt32({time}) AS h, toString(navigator_id) AS k, toUInt64(sum(queries)), toUInt64(0), toUInt64(0)
             FROM {table} WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k"
        ))
        .await
        .unwrap();
        assert_eq!(got, raw, "{table}");
    }
    // Calls, errors and distinct queries per hour and server.
    let raw = rows(
        "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, toString(server_id) AS k, toUInt64(count()), toUInt64(countIf(NOT success)),
                toUInt64(uniqExact(query_id))
         FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    let got = rows(
        "SELECT toUInt32(hour) AS h, toString(server_id) AS k, toUInt64(sum(calls)), toUInt64(sum(errors)), toUInt64(uniqExactIfMerge(queries))
         FROM tool_calls_server_1h WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    assert_eq!(got, raw, "tool_calls_server_1h");
    let raw_tools = rows(
        "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, toString(tool_name) AS k, toUInt64(count()), toUInt64(countIf(NOT success)),
                toUInt64(uniqExact(query_id))
         FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    let got = rows(
        "SELECT toUInt32(hour) AS h, toString(tool_name) AS k, toUInt64(sum(calls)), toUInt64(sum(errors)), toUInt64(uniqExactIfMerge(queries))
         FROM tool_calls_tool_1h WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    assert_eq!(got, raw_tools, "tool_calls_tool_1h");
    assert_eq!(raw.iter().map(|r| r.2).sum::<u64>(), 1500); // 0 + 1 + 2 + 3 calls per four queries
                                                            // Calls and errors per hour and navigator.
    let raw = rows(
        "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, toString(navigator_id) AS k, toUInt64(count()), toUInt64(countIf(NOT success)), toUInt64(0)
         FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    let got = rows(
        "SELECT toUInt32(hour) AS h, toString(navigator_id) AS k, toUInt64(sum(calls)), toUInt64(sum(errors)), toUInt64(0)
         FROM tool_calls_navigator_1h WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k",
    )
    .await
    .unwrap();
    assert_eq!(got, raw, "tool_calls_navigator_1h");
    drop_db(&ch).await;
}

/// 0012's tenant 5-minute rollups: rows already in the raw tables when the
/// migration runs (twice at the same time) are backfilled once, rows
/// inserted afterwards arrive through the views, and calls, errors,
/// latency sums and queries (one per `navigator_query` execution) equal
/// the raw tables' 5 minutes by 5 minutes.
#[tokio::test]
async fn five_minute_rollups_backfill_once_and_equal_the_raw_tables() {
    use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
    let ch = clickhouse(&unique_db("five_minutes"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to the version before 0012: its views and tables and every
    // newer migration's gone, so that migrating again backfills them.
    roll_back_to(&db, 11).await;
    let tenant = uuid::Uuid::new_v4();
    let start_ms = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let now = chrono::Utc::now();
    // Event i at start + i x 97 s: a call (kind and success vary), and
    // every third one a query's execution (every fourth of those another
    // kind of run, not a query).
    let calls = |from: i64, n: i64| -> Vec<ToolCallRow> {
        (from..from + n)
            .map(|i| {
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + i * 97_000, "tenant_id": tenant,
                    "query_id": uuid::Uuid::from_u128(i as u128 / 3 + 1), "tool_name": "search", "latency_ms": (i % 60) as f64,
                    "success": i % 7 != 0, "call_kind": if i % 5 == 0 { "suggest_tools" } else { "tool" },
                });
                ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    let executions = |from: i64, n: i64| -> Vec<AgentExecutionRow> {
        (from..from + n)
            .filter(|i| i % 3 == 0)
            .map(|i| {
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + i * 97_000, "tenant_id": tenant,
                    "execution_id": uuid::Uuid::from_u128(i as u128 / 3 + 1),
                    "execution_kind": if i % 12 == 9 { "agent_chat" } else { "navigator_query" },
                    "billable": true, "input_tokens": 1, "output_tokens": 1, "cost_usd": "0.000001",
                });
                AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    insert_rows(&db, "tool_calls", calls(0, 500)).await;
    insert_rows(&db, "agent_executions", executions(0, 500)).await;
    migrate_concurrently(&ch).await;
    insert_rows(&db, "tool_calls", calls(500, 300)).await;
    insert_rows(&db, "agent_executions", executions(500, 300)).await;

    let t = tenant.to_string();
    let rows = |sql: &str| db.query(sql).bind(t.clone()).fetch_all::<(u32, String, u64, u64, f64)>();
    let raw = rows(
        "SELECT toUInt32(toStartOfFiveMinutes(occurred_at)) AS f, toString(call_kind) AS k, toUInt64(count()),
                toUInt64(countIf(NOT success)), toFloat64(sum(latency_ms))
         FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY f, k ORDER BY f, k",
    )
    .await
    .unwrap();
    assert_eq!(raw.iter().map(|r| r.2).sum::<u64>(), 800);
    let got = rows(
        "SELECT toUInt32(five_minute) AS f, toString(call_kind) AS k, toUInt64(sum(calls)), toUInt64(sum(errors)),
                toFloat64(sum(latency_sum_ms))
         FROM tool_calls_tenant_5m WHERE tenant_id = toUUID(?) GROUP BY f, k ORDER BY f, k",
    )
    .await
    .unwrap();
    assert_eq!(got, raw, "tool_calls_tenant_5m");
    let queries = |sql: &str| db.query(sql).bind(t.clone()).fetch_all::<(u32, u64)>();
    let raw = queries(
        "SELECT toUInt32(toStartOfFiveMinutes(occurred_at)) AS f, toUInt64(uniqExact(execution_id))
         FROM agent_executions WHERE tenant_id = toUUID(?) AND execution_kind = 'navigator_query' GROUP BY f ORDER BY f",
    )
    .await
    .unwrap();
    assert_eq!(raw.iter().map(|r| r.1).sum::<u64>(), 201); // i % 3 == 0 (267) and not i % 12 == 9 (66) for i in 0..800
    let got = queries("SELECT toUInt32(five_minute) AS f, toUInt64(sum(queries)) FROM query_counts_tenant_5m WHERE tenant_id = toUUID(?) GROUP BY f ORDER BY f")
        .await
        .unwrap();
    assert_eq!(got, raw, "query_counts_tenant_5m");
    drop_db(&ch).await;
}

/// 0013's user rollups: rows already in the raw tables when the migration
/// runs (twice at the same time) are backfilled once, rows inserted
/// afterwards arrive through the views, and every figure equals the raw
/// tables' per user and hour (tool calls and errors per call kind;
/// queries, executions, tokens and cost per user) or per user (first and
/// last event, latest non-empty e-mail), for two tenants with the same
/// user ids and e-mails.
#[tokio::test]
async fn user_rollups_backfill_once_and_equal_the_raw_tables() {
    use agentmeter_schema::rows::{AgentExecutionRow, ToolCallRow};
    let ch = clickhouse(&unique_db("users"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to the version before 0013: its views and tables and every
    // newer migration's gone, so that migrating again backfills them.
    roll_back_to(&db, 12).await;
    let tenants = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let start_ms = chrono::Utc::now().timestamp_millis() - 45 * 86_400_000;
    let now = chrono::Utc::now();
    let user = |q: i64| uuid::Uuid::from_u128(500 + (q % 5) as u128);
    // User 4's events carry no e-mail before q = 500; users 0-3 change
    // e-mail every 300 queries; q % 11 == 0 has no user at all.
    let email = |q: i64| if q % 5 == 4 && q < 500 { String::new() } else { format!("u{}-{}@example.com", q % 5, q / 300) };
    let executions = |t: usize, from: i64, n: i64| -> Vec<AgentExecutionRow> {
        (from..from + n)
            .map(|q| {
                let uid = if q % 11 == 0 { uuid::Uuid::nil() } else { user(q) };
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + q * 3_600_000 + 20_000 + t as i64 * 1000, "tenant_id": tenants[t],
                    "execution_id": uuid::Uuid::from_u128(q as u128 + 1), "execution_kind": if q % 3 == 2 { "agent_chat" } else { "navigator_query" },
                    "billable": true, "input_tokens": q % 7, "output_tokens": 2, "cost_usd": "0.000001",
                    "messages_count": 1 + t, "navigator_id": uuid::Uuid::from_u128(9), "navigator_instance_id": uuid::Uuid::from_u128(9),
                    "project_id": uuid::Uuid::from_u128(7 + (q % 2) as u128), "user_token_id": uid, "user_email": email(q),
                });
                let mut raw = raw;
                if q % 13 == 0 {
                    raw["cost_known"] = false.into();
                    raw.as_object_mut().unwrap().remove("cost_usd");
                }
                AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    let calls = |t: usize, from: i64, n: i64| -> Vec<ToolCallRow> {
        (from..from + n)
            .flat_map(|q| (0..(q + t as i64) % 4).map(move |k| (q, k)))
            .map(|(q, k)| {
                let raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + q * 3_600_000 + 21_000 + k * 15_000, "tenant_id": tenants[t],
                    "query_id": uuid::Uuid::from_u128(q as u128 + 1), "tool_name": "search", "latency_ms": (q % 50) as f64,
                    "success": (q + k) % 7 != 0, "call_kind": if k == 1 { "suggest_tools" } else { "tool" },
                    "server_id": uuid::Uuid::from_u128(20 + k as u128), "server_instance_id": uuid::Uuid::from_u128(30 + k as u128),
                    "navigator_id": uuid::Uuid::from_u128(9), "navigator_instance_id": uuid::Uuid::from_u128(9),
                    "project_id": uuid::Uuid::from_u128(7 + (q % 2) as u128), "user_token_id": user(q), "user_email": email(q),
                });
                ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    for t in 0..2 {
        insert_rows(&db, "tool_calls", calls(t, 0, 600)).await;
        insert_rows(&db, "agent_executions", executions(t, 0, 600)).await;
    }
    migrate_concurrently(&ch).await;
    for t in 0..2 {
        insert_rows(&db, "tool_calls", calls(t, 600, 400)).await;
        insert_rows(&db, "agent_executions", executions(t, 600, 400)).await;
    }

    for tenant in tenants {
        let t = tenant.to_string();
        let rows = |sql: &str| db.query(sql).bind(t.clone()).fetch_all::<(u32, String, String, u64, u64)>();
        let raw = rows(
            "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, concat(toString(user_token_id), toString(project_id), call_kind) AS k,
                    user_email AS e, toUInt64(count()), toUInt64(countIf(NOT success))
             FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY h, k, e ORDER BY h, k, e",
        )
        .await
        .unwrap();
        let got = rows(
            "SELECT toUInt32(hour) AS h, concat(toString(user_token_id), toString(project_id), call_kind) AS k,
                    user_email AS e, toUInt64(sum(calls)), toUInt64(sum(errors))
             FROM tool_calls_user_1h WHERE tenant_id = toUUID(?) GROUP BY h, k, e ORDER BY h, k, e",
        )
        .await
        .unwrap();
        assert!(raw.len() > 1000, "{}", raw.len());
        assert_eq!(got, raw, "tool_calls_user_1h");
        let raw = rows(
            "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, concat(toString(user_token_id), toString(project_id)) AS k, user_email AS e,
                    toUInt64(countIf(execution_kind = 'navigator_query')) * 1000000 + toUInt64(count()) * 1000 + toUInt64(countIf(NOT cost_known)),
                    toUInt64(sum(total_tokens)) * 1000 + toUInt64(sum(messages_count)) + toUInt64(sum(cost_usd) * 1000000) * 1000000
             FROM agent_executions WHERE tenant_id = toUUID(?) GROUP BY h, k, e ORDER BY h, k, e",
        )
        .await
        .unwrap();
        let got = rows(
            "SELECT toUInt32(hour) AS h, concat(toString(user_token_id), toString(project_id)) AS k, user_email AS e,
                    toUInt64(sum(queries)) * 1000000 + toUInt64(sum(executions)) * 1000 + toUInt64(sum(unpriced_executions)),
                    toUInt64(sum(total_tokens)) * 1000 + toUInt64(sum(messages)) + toUInt64(sum(cost_usd) * 1000000) * 1000000
             FROM agent_executions_user_1h WHERE tenant_id = toUUID(?) GROUP BY h, k, e ORDER BY h, k, e",
        )
        .await
        .unwrap();
        assert_eq!(got, raw, "agent_executions_user_1h");
        let users = |sql: &str| db.query(sql).bind(t.clone()).bind(t.clone()).fetch_all::<(String, String, i64, i64)>();
        let raw = users(
            "SELECT concat(toString(user_token_id), toString(project_id)) AS k, toString(argMaxIf(user_email, occurred_at, user_email != '')),
                    toInt64(toUnixTimestamp64Milli(min(occurred_at))), toInt64(toUnixTimestamp64Milli(max(occurred_at)))
             FROM (SELECT user_token_id, project_id, user_email, occurred_at FROM tool_calls WHERE tenant_id = toUUID(?)
                   UNION ALL SELECT user_token_id, project_id, user_email, occurred_at FROM agent_executions WHERE tenant_id = toUUID(?))
             WHERE user_token_id != toUUID('00000000-0000-0000-0000-000000000000') GROUP BY k ORDER BY k",
        )
        .await
        .unwrap();
        let got = users(
            "SELECT concat(toString(user_token_id), toString(project_id)) AS k, toString(argMaxIfMerge(email)),
                    toInt64(toUnixTimestamp64Milli(min(first_at))), toInt64(toUnixTimestamp64Milli(max(last_at)))
             FROM project_users_1mon WHERE tenant_id = toUUID(?) AND tenant_id = toUUID(?) GROUP BY k ORDER BY k",
        )
        .await
        .unwrap();
        assert_eq!(raw.len(), 10, "5 users in 2 projects");
        assert_eq!(got, raw, "project_users_1mon");
        let servers = |sql: &str| db.query(sql).bind(t.clone()).fetch_all::<(String, u64)>();
        let raw = servers(
            "SELECT concat(toString(project_id), toString(server_instance_id)) AS k, toUInt64(count()) FROM tool_calls
             WHERE tenant_id = toUUID(?) GROUP BY k ORDER BY k",
        )
        .await
        .unwrap();
        let got = servers(
            "SELECT concat(toString(project_id), toString(server_instance_id)) AS k, toUInt64(sum(calls)) FROM project_servers_1mon
             WHERE tenant_id = toUUID(?) GROUP BY k ORDER BY k",
        )
        .await
        .unwrap();
        assert_eq!(got, raw, "project_servers_1mon");
    }
    drop_db(&ch).await;
}

/// The hourly execution rollups of 0016 (keyed like the minute rollup
/// without the user) and 0019 (per executing user and navigator keys)
/// hold, for rows inserted before them (backfilled) and after (through
/// their views), the raw table's counts, tokens, cost and newest event per
/// row of their keys.
#[tokio::test]
async fn executions_hourly_rollups_backfill_once_and_equal_the_raw_table() {
    use agentmeter_schema::rows::AgentExecutionRow;
    let ch = clickhouse(&unique_db("exec_hourly"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to before 0016, so that migrating again backfills 0016 and 0019.
    roll_back_to(&db, 15).await;
    let tenants = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let start_ms = chrono::Utc::now().timestamp_millis() - 10 * 86_400_000;
    let now = chrono::Utc::now();
    // Several executions per hour (q / 3), in two projects, three models,
    // two kinds, by four executing users, some unpriced, some failed.
    let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet"];
    let executions = |t: usize, from: i64, n: i64| -> Vec<AgentExecutionRow> {
        (from..from + n)
            .map(|q| {
                let mut raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + (q / 3) * 3_600_000 + (q % 3) * 600_000 + t as i64 * 1000,
                    "tenant_id": tenants[t], "execution_id": uuid::Uuid::new_v4(),
                    "execution_kind": if q % 4 == 3 { "agent_chat" } else { "navigator_query" },
                    "billable": q % 5 != 0, "input_tokens": q % 7, "output_tokens": 2 + q % 3, "cost_usd": format!("0.00000{}", 1 + q % 8),
                    "messages_count": 1 + t, "model": models[(q % 3) as usize],
                    "status": if q % 9 == 0 { "failed" } else { "success" }, "organization_id": uuid::Uuid::from_u128(40 + (q % 2) as u128),
                    "navigator_id": uuid::Uuid::from_u128(9), "navigator_instance_id": uuid::Uuid::from_u128(10 + (q % 3) as u128),
                    "project_id": uuid::Uuid::from_u128(7 + (q % 2) as u128),
                    "user_token_id": uuid::Uuid::from_u128(500 + (q % 5) as u128),
                    "user_id": uuid::Uuid::from_u128(600 + (q % 4) as u128),
                });
                if q % 13 == 0 {
                    raw["cost_known"] = false.into();
                    raw.as_object_mut().unwrap().remove("cost_usd");
                }
                AgentExecutionRow::from(&agentmeter_schema::parse_agent_execution(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    for t in 0..2 {
        insert_rows(&db, "agent_executions", executions(t, 0, 400)).await;
    }
    migrate_concurrently(&ch).await;
    for t in 0..2 {
        insert_rows(&db, "agent_executions", executions(t, 400, 300)).await;
    }
    // Each table's keys besides the hour, as one string.
    let tables = [
        (
            "agent_executions_1h",
            "concat(toString(organization_id), toString(project_id), toString(navigator_instance_id), execution_kind,
                    toString(billable), status, model, error_type)",
        ),
        (
            "agent_executions_executor_1h",
            "concat(toString(user_id), toString(project_id), toString(navigator_instance_id), toString(navigator_id))",
        ),
    ];
    for (tenant, (table, keys)) in tenants.iter().flat_map(|t| tables.iter().map(move |k| (t, k))) {
        let t = tenant.to_string();
        let rows = |sql: String| db.query(&sql).bind(t.clone()).fetch_all::<(u32, String, u64, u64, u64, i64)>();
        let raw = rows(format!(
            "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, {keys} AS k,
                    toUInt64(count()) * 1000 + toUInt64(countIf(NOT cost_known)),
                    toUInt64(sum(input_tokens)) * 1000000 + toUInt64(sum(output_tokens)) * 1000 + toUInt64(sum(messages_count)),
                    toUInt64(sum(total_tokens)) * 1000000 + toUInt64(sum(cost_usd) * 1000000),
                    toInt64(toUnixTimestamp64Milli(max(occurred_at)))
             FROM agent_executions WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k"
        ))
        .await
        .unwrap();
        let got = rows(format!(
            "SELECT toUInt32(hour) AS h, {keys} AS k,
                    toUInt64(sum(executions)) * 1000 + toUInt64(sum(unpriced_executions)),
                    toUInt64(sum(input_tokens)) * 1000000 + toUInt64(sum(output_tokens)) * 1000 + toUInt64(sum(messages)),
                    toUInt64(sum(total_tokens)) * 1000000 + toUInt64(sum(cost_usd) * 1000000),
                    toInt64(toUnixTimestamp64Milli(max(latest_occurred_at)))
             FROM {table} WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k"
        ))
        .await
        .unwrap();
        assert!(raw.len() > 200, "{table}: {}", raw.len());
        assert_eq!(got, raw, "{table}: counts, tokens, cost and the newest event of every row, backfilled and live");
    }
    drop_db(&ch).await;
}

/// The two hourly rollups shaped for a question that 0017 and 0018 add
/// (per tenant and call kind; per call kind, error type and navigator
/// keys) hold, for rows inserted before them (backfilled) and after
/// (through their views), the raw table's counts, sums and newest event
/// per row of their keys, and t-digest states of every latency.
#[tokio::test]
async fn tenant_and_error_type_hours_backfill_once_and_equal_the_raw_table() {
    use agentmeter_schema::rows::ToolCallRow;
    let ch = clickhouse(&unique_db("tenant_kind"));
    migrations::migrate(&ch.server_client(), &ch.database).await.unwrap();
    let db = ch.client();
    // Back to before 0017, so that migrating again backfills 0017 and 0018.
    roll_back_to(&db, 16).await;
    let tenants = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let projects = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let start_ms = chrono::Utc::now().timestamp_millis() - 10 * 86_400_000;
    let now = chrono::Utc::now();
    let kinds = ["tool", "suggest_tools", "get_tool_schemas", "invoke_tools"];
    // Several calls per hour of every kind, some failed with one of two
    // error types (or none), some with a runtime, in two projects, for two
    // tenants a second apart.
    let calls = |t: usize, from: i64, n: i64| -> Vec<ToolCallRow> {
        (from..from + n)
            .map(|i| {
                let error_type = match i % 12 {
                    0 => Some("timeout"),
                    6 => Some("rate_limit"),
                    _ => None,
                };
                let mut raw = serde_json::json!({
                    "event_id": uuid::Uuid::new_v4(), "occurred_at": start_ms + (i / 5) * 3_600_000 + (i % 5) * 600_000 + t as i64 * 1000,
                    "tenant_id": tenants[t], "tool_name": format!("tool_{}", i % 3), "latency_ms": (i % 40) as f64 + 0.5,
                    "success": i % 6 != 0 && i % 9 != 0, "error_type": error_type, "project_id": projects[(i % 7 % 2) as usize],
                    "call_kind": kinds[(i % 4) as usize], "query_id": uuid::Uuid::from_u128((i / 3) as u128 + 1),
                });
                if i % 4 != 0 {
                    raw["suggestions_count"] = (i % 4).into();
                }
                if i % 2 == 0 {
                    raw["runtime_ms"] = ((i % 7) as f64).into();
                }
                ToolCallRow::from(&agentmeter_schema::parse_tool_call(raw.to_string().as_bytes(), now).unwrap())
            })
            .collect()
    };
    for t in 0..2 {
        insert_rows(&db, "tool_calls", calls(t, 0, 400)).await;
    }
    migrate_concurrently(&ch).await;
    for t in 0..2 {
        insert_rows(&db, "tool_calls", calls(t, 400, 300)).await;
    }
    // Each table's key besides the hour, as one string.
    let tables = [
        ("tool_calls_tenant_kind_1h", "toString(call_kind)", 100),
        (
            "tool_calls_error_type_1h",
            "concat(toString(call_kind), '/', toString(error_type), '/', toString(project_id), '/', toString(navigator_instance_id))",
            200,
        ),
    ];
    for tenant in tenants {
        let t = tenant.to_string();
        let rows = |sql: String| db.query(&sql).bind(t.clone()).fetch_all::<(u32, String, u64, u64, u64, i64)>();
        let raw_keys = |key: &str| {
            rows(format!(
                "SELECT toUInt32(toStartOfHour(occurred_at)) AS h, {key} AS k,
                        toUInt64(count()) * 1000 + toUInt64(countIf(NOT success)),
                        toUInt64(sum(suggestions_count)) * 1000 + toUInt64(count(runtime_ms)),
                        toUInt64(sum(latency_ms) * 10) * 1000 + toUInt64(sum(ifNull(runtime_ms, 0))),
                        toInt64(toUnixTimestamp64Milli(max(occurred_at)))
                 FROM tool_calls WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k"
            ))
        };
        for (table, key, at_least) in tables {
            let raw = raw_keys(key).await.unwrap();
            let got = rows(format!(
                "SELECT toUInt32(hour) AS h, {key} AS k,
                        toUInt64(sum(calls)) * 1000 + toUInt64(sum(errors)),
                        toUInt64(sum(suggestions)) * 1000 + toUInt64(sum(runtime_count)),
                        toUInt64(sum(latency_sum_ms) * 10) * 1000 + toUInt64(sum(runtime_sum_ms)),
                        toInt64(toUnixTimestamp64Milli(max(latest_occurred_at)))
                 FROM {table} WHERE tenant_id = toUUID(?) GROUP BY h, k ORDER BY h, k"
            ))
            .await
            .unwrap();
            assert!(raw.len() > at_least, "{table}: {}", raw.len());
            assert_eq!(got, raw, "{table}: counts, sums and the newest event of every row, backfilled and live");
            // The t-digest states hold every latency: the median per kind over
            // the whole range, as from the raw values.
            let medians = |sql: String| db.query(&sql).bind(t.clone()).fetch_all::<(String, f64)>();
            let raw = medians(
                "SELECT toString(call_kind) AS k, toFloat64(quantileTDigest(0.5)(latency_ms)) FROM tool_calls
                 WHERE tenant_id = toUUID(?) GROUP BY k ORDER BY k"
                    .into(),
            )
            .await
            .unwrap();
            let got = medians(format!(
                "SELECT toString(call_kind) AS k, toFloat64(quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_digest)[1]) FROM {table}
                 WHERE tenant_id = toUUID(?) GROUP BY k ORDER BY k"
            ))
            .await
            .unwrap();
            assert_eq!(got.len(), 4);
            for ((k, a), (_, b)) in got.iter().zip(&raw) {
                assert!((a - b).abs() <= 1.0, "{table} {k}: median {a} from the states, {b} from the raw values");
            }
        }
    }
    drop_db(&ch).await;
}
