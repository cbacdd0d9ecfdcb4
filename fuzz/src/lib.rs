//! The properties the fuzz targets check, one function per target. Each returns `Err` with a
//! description of the finding (the target turns it into a panic, which libFuzzer records with its
//! input); a panic inside stage-guard is a finding by itself.
//!
//! - [`decode`]: `admission::request::decode` accepts exactly the bodies that serde_json, reading a
//!   `&str`, accepts as a well-formed review envelope, and reads the same values from them.
//! - [`answer`]: `admission::answer` for both webhooks, under several policies, never writes a response
//!   the API server would refuse (apiserver-contract.md 2).
//! - [`history`]: `core::history::parse` reads back what `render` writes, and what it accepts holds.

mod answer;
mod decode;
mod history;
mod oracle;
pub mod replay;

pub use answer::answer;
pub use decode::decode;
pub use history::history;
