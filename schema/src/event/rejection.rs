//! Why an event was refused: a small, closed set of kinds (used as metric
//! labels and dead-letter headers) plus the field and a human sentence.

use std::fmt;

/// The class of problem, stable and low-cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The message is not a JSON object.
    InvalidJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field has the right type but an impossible value.
    InvalidValue,
    /// The message exceeds the size limit.
    TooLarge,
}

impl RejectionKind {
    /// The label used in metrics and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::TooLarge => "too_large",
        }
    }

    /// Every kind, for pre-registering metric label values.
    pub const ALL: [RejectionKind; 5] = [Self::InvalidJson, Self::MissingField, Self::WrongType, Self::InvalidValue, Self::TooLarge];
}

/// A refused event: which field (empty when the whole message is at fault),
/// the kind of problem, and a sentence a producer's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub field: String,
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, field: &str, message: impl Into<String>) -> Self {
        Self { kind, field: field.to_owned(), message: message.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.kind.as_str(), self.message)
        } else {
            write!(f, "{}: field `{}`: {}", self.kind.as_str(), self.field, self.message)
        }
    }
}

impl std::error::Error for Rejection {}
