//! The JSON Schemas under `schema/json/` are generated from the Rust types.
//! Run with `AGENTMETER_UPDATE_SCHEMAS=1` to rewrite them after a change.

use std::path::PathBuf;

#[test]
fn json_schemas_are_in_sync() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("AGENTMETER_UPDATE_SCHEMAS").is_some();
    for (file, generated) in agentmeter_schema::event::json_schemas() {
        let path = dir.join(file);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is out of date: run `AGENTMETER_UPDATE_SCHEMAS=1 cargo test -p agentmeter-schema json_schemas`",
            path.display()
        );
    }
}
