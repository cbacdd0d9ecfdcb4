//! (scenarios to come)
use crate::Scenario;

pub const SCENARIOS: &[Scenario] = &[];
