//! stage-guard's test environment: the real control plane its end-to-end tests run against.
//!
//! - [`gobuild`] builds kube-apiserver and etcd (and Argo's CLI and controller) from the Go modules
//!   pinned in `tests/apiserver/` and `tests/argo/`, into `~/.cache/stage-guard/<module>-<version>/`,
//!   and reuses that build while the pins do not change.
//! - [`ControlPlane`] starts etcd and kube-apiserver on loopback with their own PKI, RBAC, users with
//!   static tokens (one kubeconfig each), an audit log, namespace `argo` and Argo's resource types.
//! - [`Cli`] runs the real `kubectl` (or `argo`) as one of those users, with a bounded wait.
//! - [`argo`] runs Argo's workflow-controller against it.
//! - [`webhooks`] registers stage-guard with the project's own webhook configurations.
//!
//! A missing tool (Go, kubectl) is an error that names it; nothing here skips.

pub mod argo;
pub mod cli;
pub mod control_plane;
pub mod gobuild;
pub mod pki;
pub mod process;
pub mod tools;
pub mod webhooks;

pub use cli::{Cli, CliOutput};
pub use control_plane::{
    ADMIN, ALICE, ARGO_CONTROLLER, ARGO_WORKFLOW, BOB, ControlPlane, Options, USERS,
};
pub use process::Process;
