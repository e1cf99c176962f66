//! Integration tests of the schema crate: the event parser (unit-level, no
//! services) and the migrations (against the local ClickHouse).

mod checksums;
mod events;
mod json_schemas;
mod migrations;
