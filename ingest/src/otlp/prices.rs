//! The optional price table: what a model's tokens cost, by date, so that
//! spans without a cost attribute can still be billed in dollars.
//!
//! A TOML file (`--otlp-price-table`) lists prices per model, each valid
//! from a date (UTC) until the next entry of the same model:
//!
//! ```toml
//! [[price]]
//! model = "gpt-4o"
//! effective_from = "2026-01-01"
//! input_usd_per_token = "0.0000025"
//! output_usd_per_token = "0.00001"
//! ```
//!
//! Prices are decimals (strings, never floats); the cost is rounded to the
//! 6 places of `cost_usd`, half away from zero. A model without a price on
//! the span's date gets no computed cost: never a guess (its event says
//! `cost_known: false`, see `mapping.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::errors::IngestError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    price: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    model: String,
    effective_from: NaiveDate,
    input_usd_per_token: String,
    output_usd_per_token: String,
}

/// Input and output price per token from a date on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Price {
    from: NaiveDate,
    input: Decimal,
    output: Decimal,
}

/// Prices by model, each model's list sorted by date.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, Vec<Price>>,
}

impl PriceTable {
    pub fn load(path: &Path) -> Result<Self, IngestError> {
        let text = std::fs::read_to_string(path).map_err(|e| IngestError::Config(format!("price table {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| IngestError::Config(format!("price table {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut models: HashMap<String, Vec<Price>> = HashMap::new();
        for e in file.price {
            let decimal = |field: &str, s: &str| {
                let d = Decimal::from_str(s.trim()).map_err(|_| format!("model {}: {field} `{s}` is not a decimal", e.model))?;
                if d.is_sign_negative() {
                    return Err(format!("model {}: {field} is negative", e.model));
                }
                Ok(d)
            };
            let price = Price {
                from: e.effective_from,
                input: decimal("input_usd_per_token", &e.input_usd_per_token)?,
                output: decimal("output_usd_per_token", &e.output_usd_per_token)?,
            };
            let list = models.entry(e.model.clone()).or_default();
            if list.iter().any(|p| p.from == price.from) {
                return Err(format!("model {}: two prices effective from {}", e.model, price.from));
            }
            list.push(price);
        }
        for list in models.values_mut() {
            list.sort_by_key(|p| p.from);
        }
        Ok(Self { models })
    }

    /// The cost of the tokens at the price in effect on `on`, or `None`
    /// when the table has no price for the model on that date.
    pub fn cost(&self, model: &str, on: NaiveDate, input_tokens: u64, output_tokens: u64) -> Option<Decimal> {
        let price = self.models.get(model)?.iter().rev().find(|p| p.from <= on)?;
        let cost =
            price.input.checked_mul(Decimal::from(input_tokens))?.checked_add(price.output.checked_mul(Decimal::from(output_tokens))?)?;
        Some(cost.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero).normalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
        [[price]]
        model = "gpt-4o"
        effective_from = "2026-01-01"
        input_usd_per_token = "0.0000025"
        output_usd_per_token = "0.00001"

        [[price]]
        model = "gpt-4o"
        effective_from = "2026-06-01"
        input_usd_per_token = "0.000002"
        output_usd_per_token = "0.000008"
    "#;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_price_in_effect_on_the_day_applies() {
        let t = PriceTable::parse(TABLE).unwrap();
        assert_eq!(t.cost("gpt-4o", day("2026-03-01"), 1000, 200), Some(Decimal::from_str("0.0045").unwrap()));
        assert_eq!(t.cost("gpt-4o", day("2026-06-01"), 1000, 200), Some(Decimal::from_str("0.0036").unwrap()));
    }

    #[test]
    fn no_price_means_no_cost() {
        let t = PriceTable::parse(TABLE).unwrap();
        assert_eq!(t.cost("gpt-4o", day("2025-12-31"), 1000, 200), None);
        assert_eq!(t.cost("claude", day("2026-03-01"), 1000, 200), None);
    }

    #[test]
    fn rounds_to_micro_dollars() {
        let t = PriceTable::parse(TABLE).unwrap();
        // 3 * 0.0000025 = 0.0000075 -> 0.000008 (half away from zero)
        assert_eq!(t.cost("gpt-4o", day("2026-01-02"), 3, 0), Some(Decimal::from_str("0.000008").unwrap()));
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(PriceTable::parse(
            "[[price]]\nmodel = \"m\"\neffective_from = \"2026-01-01\"\ninput_usd_per_token = \"x\"\noutput_usd_per_token = \"0\""
        )
        .is_err());
        assert!(PriceTable::parse("[[price]]\nmodel = \"m\"").is_err());
        assert!(
            PriceTable::parse(&format!("{TABLE}\n{}", TABLE.split("[[price]]").nth(1).map(|s| format!("[[price]]{s}")).unwrap())).is_err()
        );
    }
}
