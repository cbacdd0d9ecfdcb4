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

/// Runs `stage-guard certs` (the binary at `stage_guard`) into `dir`, with 127.0.0.1, the host of
/// the loopback URL, as a SAN; returns the base64 CA bundle it prints.
pub fn issue_serving_cert(stage_guard: &std::path::Path, dir: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new(stage_guard)
        .args([
            "certs",
            "--service",
            "stage-guard",
            "--namespace",
            "stage-guard",
        ])
        .args(["--san", "127.0.0.1", "--out"])
        .arg(dir)
        .env_remove("STAGE_GUARD_CONFIG")
        .output()
        .with_context(|| format!("run {} certs", stage_guard.display()))?;
    ensure!(
        out.status.success(),
        "stage-guard certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
