//! The end-to-end harness: the stage-guard process, an HTTPS client that behaves like
//! kube-apiserver's webhook client, and an API server simulation (store, optimistic concurrency,
//! admission order) that calls the webhook and checks its answers like the real one.
// Each test file uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod apiserver;
pub mod balancer;
pub mod checks;
pub mod client;
pub mod fields;
pub mod fixtures;
pub mod match_conditions;
pub mod patch;
pub mod process;
pub mod review;
// The harness's own tests, against in-process fake webhooks (only where the test harness runs).
#[cfg(test)]
mod selftest;
pub mod store;
pub mod time;

pub use apiserver::{ApiError, ApiServer, CallRecord, Outcome, Patch, Stored};
pub use process::Webhook;
pub use review::{Hook, Operation, ReviewRequest, UserInfo};
