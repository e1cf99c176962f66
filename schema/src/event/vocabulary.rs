//! The closed vocabularies of the event contract. Each parses from its
//! lowercase wire name and nothing else.

use schemars::JsonSchema;
use serde::Serialize;

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// The accepted wire names, for error messages.
            pub fn expected() -> String {
                [$($wire),+].join(" | ")
            }
        }
    };
}

vocabulary!(
    /// What a tool-call record is: a real tool invocation or one of the proxy
    /// operations. Only `tool` counts as a "tool call" in the analytics.
    CallKind {
        Tool => "tool",
        InvokeTools => "invoke_tools",
        GetToolSchemas => "get_tool_schemas",
        SuggestTools => "suggest_tools",
    }
);

vocabulary!(
    /// Error classes of failed calls and executions.
    ErrorType {
        Timeout => "timeout",
        Authentication => "authentication",
        RateLimit => "rate_limit",
        Validation => "validation",
        Upstream => "upstream",
        Internal => "internal",
        Other => "other",
    }
);

impl ErrorType {
    /// The display name used in `error_name` of the error-types graph.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Timeout => "Timeout Errors",
            Self::Authentication => "Authentication Errors",
            Self::RateLimit => "Rate Limit Errors",
            Self::Validation => "Validation Errors",
            Self::Upstream => "Upstream Errors",
            Self::Internal => "Internal Errors",
            Self::Other => "Other Errors",
        }
    }
}

vocabulary!(
    /// What produced an agent execution.
    ExecutionKind {
        AgentChat => "agent_chat",
        ExternalAgentCall => "external_agent_call",
        AiCompletion => "ai_completion",
        NavigatorQuery => "navigator_query",
    }
);

vocabulary!(
    /// Outcome of an agent execution.
    ExecutionStatus {
        Success => "success",
        Failed => "failed",
        Pending => "pending",
    }
);
