//! Result files and tables: one JSON document per benchmark in
//! `bench/results/<name>.json`, and an aligned text table on stdout.

use std::path::Path;

use serde_json::Value;

/// Writes `doc` to `<dir>/<name>.json`.
pub fn write(dir: &str, name: &str, doc: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = Path::new(dir).join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(doc)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Prints rows as an aligned table (first row is the header).
pub fn table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.len()).max().unwrap_or(0)).collect();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| if c == 0 { format!("{s:<w$}", w = widths[c]) } else { format!("{s:>w$}", w = widths[c]) })
            .collect();
        println!("{}", line.join("  "));
        if i == 0 {
            println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
}

/// Percentile (nearest rank) of unsorted samples, in their unit.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Rounds to `d` decimals for readable JSON.
pub fn round(v: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (v * f).round() / f
}

/// `yes` / `NO` for a table cell.
pub fn met(b: bool) -> String {
    if b {
        "yes".into()
    } else {
        "NO".into()
    }
}
