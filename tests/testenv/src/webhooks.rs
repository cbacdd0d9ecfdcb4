//! stage-guard's own webhook configurations on the test control plane: `deploy/base` rendered by
//! the real `kubectl kustomize`, with only each webhook's `clientConfig` rewritten to a loopback
//! `url:` and the CA bundle, since the webhook runs as a process beside the API server.

use crate::control_plane::{ADMIN, ControlPlane};
use crate::gobuild::repo_root;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

pub const MUTATING: &str = "MutatingWebhookConfiguration";
pub const VALIDATING: &str = "ValidatingWebhookConfiguration";

/// The two webhook configurations of `deploy/base`, as `kubectl kustomize` renders them.
pub fn rendered() -> Result<Vec<Value>> {
    let base = repo_root().join("deploy/base");
    let yaml = crate::Cli::new(crate::tools::kubectl()?)
        .arg("kustomize")
        .arg(&base)
        .ok()?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).context("parse kustomize output")?;
    let hooks: Vec<Value> = docs
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some(MUTATING | VALIDATING)))
        .collect();
    ensure!(
        hooks.len() == 2,
        "deploy/base renders {} webhook configurations, not 2",
        hooks.len()
    );
    Ok(hooks)
}

/// `configs` with every `clientConfig` pointing at `https://127.0.0.1:PORT<service path>`.
pub fn pointed_at(mut configs: Vec<Value>, port: u16, ca_bundle: &str) -> Result<Vec<Value>> {
    for config in &mut configs {
        for hook in config["webhooks"]
            .as_array_mut()
            .context("webhooks is not a list")?
        {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .context("clientConfig.service.path")?
                .to_string();
            hook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": ca_bundle,
            });
        }
    }
    Ok(configs)
}

impl ControlPlane {
    /// Applies objects as the admin, server-side, so a later apply of the same objects replaces
    /// the fields it sets.
    pub fn apply(&self, objects: Vec<Value>) -> Result<()> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl(ADMIN)?
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=testenv",
                "-f",
                "-",
            ])
            .stdin(list.to_string())
            .ok()?;
        Ok(())
    }

    /// Registers stage-guard at `127.0.0.1:port` with `deploy/base`'s configurations.
    pub fn register_stage_guard(&self, port: u16, ca_bundle: &str) -> Result<()> {
        self.apply(pointed_at(rendered()?, port, ca_bundle)?)
            .context("apply the webhook configurations")
    }

    /// Deletes stage-guard's webhook configurations (if any).
    pub fn unregister_stage_guard(&self) -> Result<()> {
        self.kubectl(ADMIN)?
            .args([
                "delete",
                "mutatingwebhookconfiguration/stage-guard",
                "validatingwebhookconfiguration/stage-guard",
                "--ignore-not-found",
            ])
            .ok()?;
        Ok(())
    }
}
