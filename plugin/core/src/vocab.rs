//! The shared vocabulary every other module speaks: ids and their syntax, catalog indexes, validation errors, and
//! the effect and sensitivity ranks. A leaf: it depends on no other module of the crate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Index of a tool in a compiled bundle's catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolIdx(pub u32);

/// Index of an MCP server in a compiled bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct McpServerIdx(pub u32);

/// Is `id` a valid tool, rule, issuer, approver or server id: `[a-z0-9][a-z0-9._-]*`?
pub fn valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
    StepUp,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::StepUp => "step_up",
        }
    }

    /// Precedence rank: deny (0), then step-up (1), then allow (2); the lowest rank that matches decides.
    pub fn rank(self) -> u64 {
        match self {
            Effect::Deny => 0,
            Effect::StepUp => 1,
            Effect::Allow => 2,
        }
    }
}

/// Sensitivity of a tool. Rules can select on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Read,
    Write,
    Payment,
    Admin,
}

impl Sensitivity {
    /// Every sensitivity, most sensitive first (the order reports list tools in).
    pub const BY_RISK: [Sensitivity; 4] =
        [Sensitivity::Payment, Sensitivity::Admin, Sensitivity::Write, Sensitivity::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Read => "read",
            Sensitivity::Write => "write",
            Sensitivity::Payment => "payment",
            Sensitivity::Admin => "admin",
        }
    }

    /// One bit per sensitivity, for the sets rules select.
    pub fn bit(self) -> u8 {
        match self {
            Sensitivity::Read => 1,
            Sensitivity::Write => 2,
            Sensitivity::Payment => 4,
            Sensitivity::Admin => 8,
        }
    }
}

/// Every sensitivity bit set.
pub const ALL_SENSITIVITIES: u8 = 0b1111;

/// One problem found while validating a bundle; `location` is a JSON pointer into the bundle (`/rules/3/tools/0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub location: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { location: location.into(), message: message.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Every problem found in a bundle (validation reports them all at once), in bundle order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
