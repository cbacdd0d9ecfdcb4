//! What the commands that read Workflows print: pure functions from the core's findings and
//! timelines to text for people (aligned tables) and stable JSON/YAML shapes for tools.

pub mod audit;
pub mod history;
pub mod next;
pub mod table;
