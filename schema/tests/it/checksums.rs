//! Landed migrations never change: each one's SQL (statements and
//! backfills, as the runner sends them) has a SHA-256 recorded in
//! `schema/migrations.sha256`, and this test fails if the SQL a migration
//! produces today differs from what was recorded when it landed.
//!
//! The checksum covers the generated SQL, not the source file, so a
//! comment can be fixed, while an edit of a shared fragment (such as
//! `tool_call_aggregates.rs`, used by 0004 and 0005) that changes a landed
//! migration's SQL is caught. A new migration adds its line (the failure
//! message prints it); a change to the schema is a new migration.

use std::collections::BTreeMap;

use agentmeter_schema::migrations::{self, Migration};
use sha2::{Digest, Sha256};

const RECORDED: &str = include_str!("../../migrations.sha256");

/// SHA-256 of what the runner sends for `m`, fields separated by NUL.
fn checksum(m: &dyn Migration) -> String {
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update(s.as_bytes());
        h.update([0u8]);
    };
    field(&m.version().to_string());
    field(m.name());
    for statement in m.statements() {
        field("statement");
        field(&statement);
    }
    for b in m.backfills() {
        field("backfill");
        for part in [b.view, b.target, &b.create_view, &b.select_before_cutoff] {
            field(part);
        }
    }
    format!("{:x}", h.finalize())
}

/// `version -> (name, checksum)` of the committed file.
fn recorded() -> BTreeMap<u32, (String, String)> {
    RECORDED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(fields.len(), 3, "line {l:?} is not `<version> <name> <sha256>`");
            (fields[0].parse().expect("version"), (fields[1].to_owned(), fields[2].to_owned()))
        })
        .collect()
}

#[test]
fn landed_migrations_are_unchanged() {
    let recorded = recorded();
    let all = migrations::all();
    let missing: Vec<String> = all
        .iter()
        .filter(|m| !recorded.contains_key(&m.version()))
        .map(|m| format!("{:04} {} {}", m.version(), m.name(), checksum(m.as_ref())))
        .collect();
    assert!(missing.is_empty(), "migrations without a recorded checksum; add to schema/migrations.sha256:\n{}", missing.join("\n"));
    for m in &all {
        let (name, sum) = &recorded[&m.version()];
        assert_eq!(name, m.name(), "migration {:04} was renamed", m.version());
        assert_eq!(
            sum,
            &checksum(m.as_ref()),
            "migration {:04} {} changed after it landed. Landed migrations are never edited: \
             revert the change and write a new migration (with its backfill) instead.",
            m.version(),
            m.name()
        );
    }
    let versions: Vec<u32> = all.iter().map(|m| m.version()).collect();
    for v in recorded.keys() {
        assert!(versions.contains(v), "migration {v:04} is recorded but no longer listed in migrations::all()");
    }
}

#[test]
fn the_checksum_sees_every_statement_and_backfill() {
    struct Edited<'a>(&'a dyn Migration, bool);
    impl Migration for Edited<'_> {
        fn version(&self) -> u32 {
            self.0.version()
        }
        fn name(&self) -> &'static str {
            self.0.name()
        }
        fn statements(&self) -> Vec<String> {
            let mut s = self.0.statements();
            if !self.1 {
                s[0].push(' ');
            }
            s
        }
        fn rollback(&self) -> &'static str {
            self.0.rollback()
        }
        fn backfills(&self) -> Vec<migrations::Backfill> {
            let mut b = self.0.backfills();
            if self.1 {
                b[0].select_before_cutoff.push(' ');
            }
            b
        }
    }
    let all = migrations::all();
    let with_backfill = all.iter().find(|m| !m.backfills().is_empty()).expect("a migration with a backfill");
    let original = checksum(with_backfill.as_ref());
    assert_ne!(checksum(&Edited(with_backfill.as_ref(), false)), original, "a statement edit");
    assert_ne!(checksum(&Edited(with_backfill.as_ref(), true)), original, "a backfill edit");
}
