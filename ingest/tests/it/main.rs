//! Integration tests of the ingest worker against the local stack (Kafka
//! protocol broker and ClickHouse), each with its own database and topics.
//!
//! `AGENTMETER_TEST_EVENTS` sets the number of messages per test (default
//! 20,000 for the main exactness test, a quarter of it for the fault tests).

mod backlog_end;
mod exactness;
mod faults;
mod kafka_away;
mod lookup;
mod multi_worker;
mod otlp;
mod refused;
mod row_binary;
mod support;
