//! The end-to-end tests of the built binary (and the command line) through the imitation of the API
//! server in `tests/support/`, in one test binary so the harness is compiled once. One module per
//! part of the contract:
//!
//! - `admission`: SPEC 4.1-4.5, the decision table, the mutating webhook, overrides, resubmit;
//! - `concurrency`: SPEC 4.6, racing writers serialised as kube-apiserver serialises them;
//! - `kubectl`: changes made by the real kubectl (`--local`) sent as kubectl sends them;
//! - `properties`: random sequences through mutate, strict patch and validate, against an oracle;
//! - `http` and `bad_input`: SPEC 5, the HTTP interface and everything that is not a review;
//! - `lifecycle`: SPEC 6 and 9, certificate rotation, mutual TLS, signals, bounds;
//! - `connections`: SPEC 5 and 9, deadlines, the connection limit and the drain;
//! - `cli`: SPEC 7, the commands, their output and exit codes.
//!
//! The harness's own tests (`support::selftest`) run here too. The real kube-apiserver suite is
//! `tests/e2e_apiserver/`; the manifests are checked by `tests/deploy_manifests/`.

#[path = "../support/mod.rs"]
mod support;

mod admission;
mod bad_input;
mod cli;
mod concurrency;
mod connections;
mod http;
mod kubectl;
mod lifecycle;
mod properties;
