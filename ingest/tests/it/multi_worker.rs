//! Several workers in one consumer group stay exact when producers do not
//! key messages by `event_id`: copies of one event on different partitions,
//! produced back to back, reach two live workers at the same instant.
//! Without routing to the home partition (`ingest/src/routing.rs`) both
//! workers' duplicate look-ups could run before either insert landed.

use std::time::Duration;

use agentmeter_bench::{Kind, Message};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::support::*;

/// Produces each message unkeyed to the given partition, all at once;
/// returns where each landed.
async fn produce_unkeyed(f: &Fixture, producer: &FutureProducer, messages: &[(Message, i32)]) -> Vec<Position> {
    let sends = messages.iter().map(|(m, partition)| {
        let topic = match m.kind {
            Kind::ToolCall => &f.tool_calls_topic,
            Kind::AgentExecution => &f.executions_topic,
        };
        let record = FutureRecord::<(), [u8]>::to(topic).partition(*partition).payload(&m.payload);
        async move {
            let delivery = producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e).expect("produced");
            Position { topic: topic.clone(), partition: delivery.partition, offset: delivery.offset }
        }
    });
    futures::future::join_all(sends).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_count_unkeyed_duplicates_on_other_partitions_once() {
    const PARTITIONS: i32 = 2;
    let f = Fixture::new("unkeyed", PARTITIONS).await;
    let (stop_a, metrics_a, worker_a) = spawn_worker(f.config());
    let (stop_b, metrics_b, worker_b) = spawn_worker(f.config());
    // Three input topics: tool calls, agent executions, OTLP spans.
    wait_for_assignment(&[&metrics_a, &metrics_b], 3 * PARTITIONS as i64, Duration::from_secs(60)).await;

    // Every valid message goes to a random partition; a third of them get
    // a copy on the other partition right behind them (and the generator's
    // own 2 % duplicates land wherever they land).
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::rng().random());
    let mut messages: Vec<(Message, i32)> = Vec::new();
    for m in traffic(51, event_count(20_000) / 2) {
        let partition = rng.random_range(0..PARTITIONS);
        let copy = (m.expected.is_some() && rng.random_bool(1.0 / 3.0)).then(|| Message { duplicate: true, ..m.clone() });
        messages.push((m, partition));
        if let Some(copy) = copy {
            messages.push((copy, (partition + 1) % PARTITIONS));
        }
    }
    let producer = producer();
    let mut positions = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(messages.len().div_ceil(20)) {
        positions.extend(produce_unkeyed(&f, &producer, chunk).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let plain: Vec<Message> = messages.iter().map(|(m, _)| m.clone()).collect();
    let expected = expect(&plain, &positions);

    let found = wait_for_rows(&f.ch, &expected.totals, Duration::from_secs(180)).await;
    // The duplicates and bad messages behind the last unique event read and
    // handled (a stray row in, every dead letter out), and the copies
    // forwarded to home partitions read, before the workers stop.
    wait_until_committed(&f, &positions, Duration::from_secs(120)).await;
    wait_for_forwarded_copies(&[&metrics_a, &metrics_b], messages.len() as u64, Duration::from_secs(120)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    for worker in [worker_a, worker_b] {
        tokio::time::timeout(Duration::from_secs(30), worker).await.expect("worker stops").unwrap();
    }

    assert_exact(&f, &expected, found).await;
    assert_every_rollup_matches_raw(&f.ch).await;
    assert_dead_lettered(&f, &expected).await;

    for (name, m) in [("first", &metrics_a), ("second", &metrics_b)] {
        let consumed: u64 = ["tool_call", "agent_execution"].iter().map(|k| m.events_consumed.with_label_values(&[k]).get()).sum();
        assert!(consumed > 0, "the {name} worker read messages");
    }
    let forwarded: u64 = [&metrics_a, &metrics_b]
        .iter()
        .flat_map(|m| ["tool_call", "agent_execution"].map(|k| m.events_forwarded.with_label_values(&[k]).get()))
        .sum();
    assert!(forwarded > 0, "messages off their home partition were forwarded");
    f.drop_database().await;
}
