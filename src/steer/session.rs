//! What every command starts from: the stage configuration and a client connected the way kubectl
//! connects, with the namespace it works in.

use crate::cli::steer::ClusterArgs;
use crate::cluster::api::Workflows;
use crate::cluster::client::Connection;
use crate::cluster::failure::Failure;
use crate::core::Policy;

use super::Stop;

pub struct Session {
    pub policy: Policy,
    pub client: kube::Client,
    pub workflows: Workflows,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Session {
    pub async fn open(args: &ClusterArgs) -> Result<Session, Stop> {
        let policy =
            Policy::load(args.config.as_deref()).map_err(|e| Stop::usage(e.to_string()))?;
        let connection = Connection {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
            namespace: args.namespace.clone(),
        };
        let connected = connection.connect().await.map_err(Failure::from)?;
        Ok(Session {
            policy,
            workflows: Workflows::new(connected.client.clone()),
            client: connected.client,
            namespace: connected.namespace,
        })
    }
}
