//! Rows ClickHouse refuses (data errors). The local engine cannot refuse a
//! row the parser accepted (docs/ingest.md), so here ClickHouse is the
//! `clickhouse` crate's mock server, answering each request of the split
//! with what a real server would: the duplicate look-up finds nothing, the
//! whole batch and every part holding the bad row fail with
//! `Code: 27` (CANNOT_PARSE_INPUT_ASSERTION_FAILED), the other parts are
//! accepted. Everything else is real: the messages are produced to the
//! local broker, the worker reads them there, reads the refused one again
//! by position and dead-letters it there, and commits its offsets there.

use std::collections::HashSet;
use std::time::Duration;

use agentmeter_schema::rows::ToolCallRow;
use clickhouse::test::{handlers, Mock};
use clickhouse::Row;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use uuid::Uuid;

use crate::support::*;

/// The shape of the duplicate look-up's answer (`SELECT event_id ...`).
#[derive(Row, Serialize)]
struct StoredId {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_row_is_isolated_dead_lettered_verbatim_and_its_offset_committed() {
    let f = Fixture::new("refused", 1).await;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let payloads: Vec<Vec<u8>> = ids.iter().map(|id| tool_call(*id)).collect();
    let producer = producer();
    let mut positions = Vec::new();
    for (id, payload) in ids.iter().zip(&payloads) {
        let key = id.to_string();
        let record = rdkafka::producer::FutureRecord::to(&f.tool_calls_topic).key(&key).payload(payload);
        let delivery = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produced");
        positions.push(Position { topic: f.tool_calls_topic.clone(), partition: delivery.partition, offset: delivery.offset });
    }
    let bad = 2;

    // The batch is the four messages (max_batch_rows 4, no age flush); the
    // split is [0..4] refused, [0..2] accepted, [2..4] refused, [2..3]
    // refused (isolated), [3..4] accepted. The mock serves exactly these
    // answers in this order and panics on any other request.
    let mock = Mock::new();
    mock.add(handlers::provide(Vec::<StoredId>::new()));
    mock.add(handlers::exception(27));
    let first_half = mock.add(handlers::record::<ToolCallRow>());
    mock.add(handlers::exception(27));
    mock.add(handlers::exception(27));
    let last = mock.add(handlers::record::<ToolCallRow>());

    let mut config = f.config();
    config.clickhouse.url = mock.url().to_owned();
    config.max_batch_rows = 4;
    config.flush_interval_ms = 600_000;
    let (stop, metrics, worker) = spawn_worker(config);

    let expected: HashSet<Position> = HashSet::from([positions[bad].clone()]);
    let dead = read_dead_letters(&f, &expected, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    assert_eq!(dead[0].source, positions[bad]);
    assert_eq!(dead[0].reason, "clickhouse_rejected");
    assert_eq!(dead[0].payload, payloads[bad], "the refused message, read again, verbatim");

    let stored: Vec<Uuid> = first_half.collect::<Vec<ToolCallRow>>().await.into_iter().map(|r| r.event_id).collect();
    assert_eq!(stored, ids[..2]);
    let stored: Vec<Uuid> = last.collect::<Vec<ToolCallRow>>().await.into_iter().map(|r| r.event_id).collect();
    assert_eq!(stored, ids[3..]);

    // Offsets are stored once the dead letter is acknowledged: the commit
    // at shutdown covers all four messages.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    assert_eq!(metrics.events_inserted.with_label_values(&["tool_call"]).get(), 3);
    assert_eq!(metrics.events_dead_lettered.with_label_values(&["tool_call", "clickhouse_rejected"]).get(), 1);
    let group: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", &f.group).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&f.tool_calls_topic, 0);
    let committed = tokio::task::spawn_blocking(move || group.committed_offsets(tpl, Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("committed offsets");
    let offset = committed.find_partition(&f.tool_calls_topic, 0).expect("partition").offset();
    assert_eq!(offset, Offset::Offset(positions[3].offset + 1), "committed past the refused row");
    drop(mock); // panics if an expected request was not made
    f.drop_database().await;
}
