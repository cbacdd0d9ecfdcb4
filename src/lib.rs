//! stage-guard: a Kubernetes admission webhook that keeps a Workflow's stage label on the paths of a
//! configured stage graph and records every change in an append-only history annotation.
//!
//! The pure core (`config`, `stages`, `history`, `verdict`, `admission::mutate` planning) holds every rule;
//! `admission` decodes and encodes AdmissionReviews around it; `server` and `main` are thin shells.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod history;
pub mod metrics;
pub mod server;
pub mod stages;
pub mod verdict;
