//! A client from kubectl's flags: `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else the
//! in-cluster service account), `--context` (else the current context) and `-n` (else the context's
//! namespace, else `default`).

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// kubectl's connection flags.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// Why there is no client: one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no kubeconfig: {0} (set --kubeconfig or KUBECONFIG, or run inside a cluster)")]
    NoConfig(String),
    #[error("kubeconfig {path}: {reason}")]
    BadConfig { path: String, reason: String },
    #[error("cannot make a Kubernetes client: {0}")]
    Client(String),
}

/// A connected client and the namespace the commands work in.
pub struct Connected {
    pub client: Client,
    pub namespace: String,
}

impl Connection {
    pub async fn connect(&self) -> Result<Connected, ConnectError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| ConnectError::BadConfig {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| ConnectError::BadConfig {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ConnectError::NoConfig(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| ConnectError::NoConfig(e.to_string()))?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| ConnectError::Client(e.to_string()))?;
        Ok(Connected { client, namespace })
    }
}
