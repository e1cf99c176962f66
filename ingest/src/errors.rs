//! The crate's one error type, and the one place that decides what a
//! ClickHouse failure means for the data.
//!
//! Every failed INSERT or look-up goes through [`classify`]:
//!
//! * [`ErrorClass::Network`] and [`ErrorClass::Server`] (connection refused,
//!   timeouts, 5xx without a data-error code, overload codes) are retried
//!   with backoff, forever; no Kafka offset moves meanwhile.
//! * [`ErrorClass::Schema`] (unknown table or column, access denied) is an
//!   operator's problem: retried too, loudly, so that fixing the deployment
//!   resumes the worker without losing anything.
//! * [`ErrorClass::Data`] (ClickHouse refused the *rows*: parse errors, type
//!   mismatches, values out of range) is never retried as is: the batch is
//!   split to find the offending rows, which go to the dead-letter topic.
//!
//! When in doubt a failure is *retryable*: a wrong "retryable" stalls the
//! pipeline visibly (metrics, logs); a wrong "data" would dead-letter good
//! events, which billing cannot afford.

use std::time::Duration;

use rand::Rng;

/// Everything that can stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("clickhouse ({class}): {source}")]
    ClickHouse { class: ErrorClass, source: clickhouse::error::Error },
    #[error("metrics server: {0}")]
    Io(#[from] std::io::Error),
}

impl From<clickhouse::error::Error> for IngestError {
    fn from(source: clickhouse::error::Error) -> Self {
        Self::ClickHouse { class: classify(&source), source }
    }
}

/// What a ClickHouse failure means (also the `class` label of
/// `agentmeter_ingest_clickhouse_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Could not talk to ClickHouse, or timed out.
    Network,
    /// ClickHouse answered with a server-side failure unrelated to the rows.
    Server,
    /// The tables do not match the rows, or access is denied.
    Schema,
    /// ClickHouse refused the rows themselves.
    Data,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] = [Self::Network, Self::Server, Self::Schema, Self::Data];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Server => "server",
            Self::Schema => "schema",
            Self::Data => "data",
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(self) -> bool {
        self != Self::Data
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ClickHouse exception codes that mean "these rows are wrong".
/// (`CANNOT_READ_ALL_DATA`/`ATTEMPT_TO_READ_AFTER_EOF` are left out on
/// purpose: a body cut short by the network produces them too.)
const DATA_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DONT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a CHECK in a view)
    407, // DECIMAL_OVERFLOW
    469, // VIOLATED_CONSTRAINT
];

/// Codes that mean "the deployment is wrong", not the rows.
const SCHEMA_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    47,  // UNKNOWN_IDENTIFIER
    60,  // UNKNOWN_TABLE
    81,  // UNKNOWN_DATABASE
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// Classifies a failure of the `clickhouse` crate.
pub fn classify(err: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match err {
        E::Network(_) | E::TimedOut => ErrorClass::Network,
        E::BadResponse(message) => classify_response(message),
        E::SchemaMismatch(_) | E::InvalidColumnsHeader(_) => ErrorClass::Schema,
        // The rows could not be serialised on our side: they are the problem.
        E::Custom(_) | E::SequenceMustHaveLength | E::InvalidUtf8Encoding(_) | E::InvalidTagEncoding(_) => ErrorClass::Data,
        _ => ErrorClass::Server,
    }
}

/// Classifies the text of a ClickHouse error response (`Code: 27. DB::Exception: ...`,
/// or a bare exception code, or `503 Service Unavailable`).
pub fn classify_response(message: &str) -> ErrorClass {
    match exception_code(message) {
        Some(code) if DATA_CODES.contains(&code) => ErrorClass::Data,
        Some(code) if SCHEMA_CODES.contains(&code) => ErrorClass::Schema,
        _ => ErrorClass::Server,
    }
}

/// The exception code of a ClickHouse error text, if it has one.
pub fn exception_code(message: &str) -> Option<u32> {
    let m = message.trim();
    if let Some(rest) = m.split("Code: ").nth(1) {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        return digits.parse().ok();
    }
    // With an empty body the crate reports the `X-ClickHouse-Exception-Code` header alone.
    if !m.is_empty() && m.len() <= 5 && m.chars().all(|c| c.is_ascii_digit()) {
        return m.parse().ok();
    }
    None
}

/// Capped exponential backoff with full jitter: attempt `n` (0-based) waits
/// a random time in `[cap/2, cap]` where `cap = min(initial * 2^n, max)`.
/// Half the delay is kept deterministic so a recovering ClickHouse is not
/// hammered by immediate retries.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self { initial: Duration::from_millis(initial_ms), max: Duration::from_millis(max_ms) }
    }

    /// The upper bound of the delay before retry number `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        let ms = (self.initial.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }

    /// The delay before retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let low = ceiling / 2;
        Duration::from_millis(rand::rng().random_range(low..=ceiling.max(low)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    #[test]
    fn data_errors_are_not_retried() {
        let e = E::BadResponse("Code: 27. DB::Exception: Cannot parse input: expected '\\t'. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)".into());
        assert_eq!(classify(&e), ErrorClass::Data);
        assert!(!classify(&e).is_retryable());
        assert_eq!(classify(&E::BadResponse("Code: 53. DB::Exception: Type mismatch".into())), ErrorClass::Data);
        assert_eq!(classify(&E::BadResponse("70".into())), ErrorClass::Data);
        assert_eq!(classify(&E::Custom("bad value".into())), ErrorClass::Data);
    }

    #[test]
    fn transport_and_server_errors_are_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(&E::Network(Box::new(io))), ErrorClass::Network);
        assert_eq!(classify(&E::TimedOut), ErrorClass::Network);
        assert_eq!(classify(&E::BadResponse("503 Service Unavailable".into())), ErrorClass::Server);
        assert_eq!(classify(&E::BadResponse("Code: 241. DB::Exception: Memory limit exceeded".into())), ErrorClass::Server);
        assert_eq!(classify(&E::BadResponse("Code: 33. DB::Exception: Cannot read all data".into())), ErrorClass::Server);
        assert_eq!(classify(&E::BadResponse("Code: 60. DB::Exception: Unknown table".into())), ErrorClass::Schema);
        for class in [ErrorClass::Network, ErrorClass::Server, ErrorClass::Schema] {
            assert!(class.is_retryable());
        }
    }

    #[test]
    fn exception_codes_are_read() {
        assert_eq!(exception_code("Code: 159. DB::Exception: Timeout exceeded"), Some(159));
        assert_eq!(exception_code("  241 "), Some(241));
        assert_eq!(exception_code("500 Internal Server Error"), None);
        assert_eq!(exception_code(""), None);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let b = Backoff::new(100, 5_000);
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_millis(5_000));
        assert_eq!(b.ceiling(1_000), Duration::from_millis(5_000));
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d <= b.ceiling(attempt) && d >= b.ceiling(attempt) / 2, "{attempt}: {d:?}");
        }
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| b.delay(10)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }
}
