//! `mode`: whether a pipeline's rule violations are denied or only warned about. A file of its own
//! because both the policy and each pipeline carry one.

use serde::Deserialize;

/// `mode`: whether rule violations are denied or only warned about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Warn,
}

impl Mode {
    /// As the configuration file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        }
    }
}
