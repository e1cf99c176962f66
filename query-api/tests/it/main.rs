//! Integration tests of agentmeter-api against the local stack, each with
//! its own database.

mod abuse;
mod analytics;
mod common;
mod consume;
mod dashboards;
mod kafka;
mod openapi_doc;
mod otlp;
mod plans;
mod project_users;
mod query_logs;
mod replicas;
mod ui;
mod usage;
<<<<<<< HEAD
mod usage_history;
=======
mod user_tokens;
>>>>>>> d5d8c96 (End-user tokens: optional JWT (JWKS RS256/ES256 or HS256 secret) next to the API key; usage answers for the token's user, another user_id is 403, expired or forged tokens 401)
