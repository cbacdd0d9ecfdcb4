//! The Kubernetes API (the `kube` crate) as the commands that read and move Workflows see it (never the webhook, which
//! admits without calling the API): a client from a kubeconfig the way kubectl finds one, and the
//! Workflows of `argoproj.io/v1alpha1` as dynamic objects (stage-guard has no typed Workflow).

pub mod api;
pub mod client;
pub mod failure;
pub mod warnings;
pub mod workflows;
