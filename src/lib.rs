//! stage-guard: a Kubernetes admission webhook that keeps a Workflow's stage label on the paths of a
//! configured stage graph and records every change in an append-only history annotation.
//!
//! `core` is the rule book (pure: the facts of a write in, a verdict or a mutation plan out);
//! `config` reads the configuration file into the core's `Policy`; `admission` decodes and encodes
//! AdmissionReviews around the core, and runs the offline pipeline; `server` and `main` are thin shells.

#![forbid(unsafe_code)]
// A request must never be able to panic the process (SPEC 5): no unwrap or expect outside tests
// (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod diagram;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod pem;
pub mod report;
pub mod server;
pub mod steer;
pub mod suggest;
pub mod suite;
#[cfg(test)]
mod test_tls;
pub mod vap;
