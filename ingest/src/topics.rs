//! Creates the worker's topics when they do not exist yet.
//!
//! Brokers that do not create topics on subscribe (the local Tansu broker,
//! or Kafka with `auto.create.topics.enable=false`) would otherwise leave a
//! fresh worker idle until a producer happens to create them and the next
//! metadata refresh notices. Creation is best effort: an existing topic is
//! fine, and any other failure (e.g. no permission) is logged, not fatal —
//! the worker then consumes the topics as soon as they appear. The
//! replication factor is the broker's default (-1, KIP-464).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

use crate::config::Config;

/// Creates whichever of the worker's topics is missing, with
/// `kafka_create_topics_partitions` partitions (0 disables this).
pub async fn ensure_topics(config: &Config) {
    let partitions = config.kafka_create_topics_partitions;
    if partitions <= 0 {
        return;
    }
    let admin: AdminClient<DefaultClientContext> = match ClientConfig::new().set("bootstrap.servers", &config.kafka_brokers).create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(%error, "cannot create a Kafka admin client; not creating topics");
            return;
        }
    };
    let mut names = vec![&config.tool_calls_topic, &config.agent_executions_topic, &config.dead_letter_topic];
    if !config.otlp_spans_topic.is_empty() {
        names.push(&config.otlp_spans_topic);
    }
    let topics: Vec<NewTopic> = names.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics(&topics, &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(topic) => tracing::info!(%topic, partitions, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => tracing::warn!(%topic, ?code, "could not create topic"),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not create topics"),
    }
}
