//! Real Argo against the test control plane: the `argo` CLI as a user, and the workflow-controller
//! watching namespace `argo`. Without nodes no Pod ever runs, so Workflows whose steps are
//! `suspend` nodes are what the controller can drive.

use crate::cli::Cli;
use crate::control_plane::{ARGO_CONTROLLER, ControlPlane};
use crate::gobuild::ARGO;
use crate::process::Process;
use anyhow::{Context, Result};
use std::process::Command;
use std::time::Duration;

impl ControlPlane {
    /// The real `argo` CLI as `user`, talking to the API server directly (no Argo server).
    pub fn argo(&self, user: &str) -> Result<Cli> {
        Ok(Cli::new(ARGO.binary("argo")?)
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user)?)
            .timeout(Duration::from_secs(90)))
    }

    /// Starts Argo's workflow-controller as Argo's service account, managing namespace `argo`,
    /// without leader election and with its metrics server off. (Its health endpoint listens on
    /// :6060, hard-coded; only one controller runs at a time.)
    pub fn start_workflow_controller(&self) -> Result<Process> {
        let bin = ARGO.binary("workflow-controller")?;
        let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: workflow-controller-configmap\n  namespace: argo\ndata:\n  metricsConfig: |\n    enabled: false\n  telemetryConfig: |\n    enabled: false\n";
        self.kubectl(crate::ADMIN)?
            .args(["apply", "-f", "-"])
            .stdin(config)
            .ok()
            .context("apply the workflow-controller configmap")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig(ARGO_CONTROLLER)?)
            .args(["--namespaced", "--managed-namespace", "argo"])
            .args(["--configmap", "workflow-controller-configmap"])
            // Never pulled: no Pod runs here.
            .args(["--executor-image", "quay.io/argoproj/argoexec:latest"])
            .args(["--loglevel", "info"])
            .env("LEADER_ELECTION_DISABLE", "true");
        let mut controller = Process::spawn(
            "workflow-controller",
            cmd,
            &self.dir().join("workflow-controller.log"),
        )?;
        controller.wait_for_log(Duration::from_secs(60), |log| {
            log.contains("Starting Workflow Controller")
                || log.contains("Started Workflow Controller")
        })?;
        Ok(controller)
    }
}
