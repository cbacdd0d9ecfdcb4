//! The three requests the commands make of Workflows, metadata only (labels and annotations are all
//! the rules read, and a Workflow's status can weigh hundreds of KiB): get one, list a page, and
//! merge-patch one. Sent through kube's client as raw HTTP so that the answer's `Warning` headers,
//! where the webhooks' warnings arrive, can be read.

use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use kube::api::{ApiResource, DynamicObject, GetParams, ListParams, Patch, PatchParams};
use kube::core::Resource;
use kube::{Client, client::Body};
use serde::Deserialize;

use super::failure::{Action, Failure};
use super::warnings;
use super::workflows::resource;

/// The field manager the commands write as (it shows in `managedFields`).
pub const FIELD_MANAGER: &str = "stage-guard";

/// An answer and the warnings that came with it.
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    pub warnings: Vec<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<ObjectMeta>,
    /// The token for the next page; `None` on the last.
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct MetaList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<MetaOnly>,
}

/// Workflows through one client.
#[derive(Clone)]
pub struct Workflows {
    client: Client,
    resource: ApiResource,
}

impl Workflows {
    pub fn new(client: Client) -> Workflows {
        Workflows {
            client,
            resource: resource(),
        }
    }

    fn request(&self, namespace: Option<&str>) -> kube::core::Request {
        kube::core::Request::new(DynamicObject::url_path(&self.resource, namespace))
    }

    /// The stored Workflow's metadata.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<ObjectMeta, Failure> {
        let action = Action {
            verb: "get",
            namespace: Some(namespace),
            name: Some(name),
        };
        let request = self
            .request(Some(namespace))
            .get_metadata(name, &GetParams::default())
            .map_err(|e| Failure::Client(e.to_string()))?;
        let reply: Reply<MetaOnly> = self.send(&action, request).await?;
        Ok(reply.value.metadata)
    }

    /// One page of Workflows (in `namespace`, or in all of them), at most `limit`, after `token`.
    pub async fn list_page(
        &self,
        namespace: Option<&str>,
        selector: Option<&str>,
        limit: u32,
        token: Option<&str>,
    ) -> Result<Page, Failure> {
        let action = Action {
            verb: "list",
            namespace,
            name: None,
        };
        let params = ListParams {
            label_selector: selector.map(str::to_owned),
            limit: Some(limit),
            continue_token: token.map(str::to_owned),
            ..ListParams::default()
        };
        let request = self
            .request(namespace)
            .list_metadata(&params)
            .map_err(|e| Failure::Client(e.to_string()))?;
        let reply: Reply<MetaList> = self.send(&action, request).await?;
        let list = reply.value;
        Ok(Page {
            items: list.items.into_iter().map(|i| i.metadata).collect(),
            next: list.metadata.continue_.filter(|t| !t.is_empty()),
        })
    }

    /// A JSON merge patch (RFC 7386) of one Workflow; the stored metadata and the warnings after it.
    pub async fn merge_patch(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Reply<ObjectMeta>, Failure> {
        let action = Action {
            verb: "patch",
            namespace: Some(namespace),
            name: Some(name),
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let request = self
            .request(Some(namespace))
            .patch_metadata(name, &params, &Patch::Merge(patch))
            .map_err(|e| Failure::Client(e.to_string()))?;
        let reply: Reply<MetaOnly> = self.send(&action, request).await?;
        Ok(Reply {
            value: reply.value.metadata,
            warnings: reply.warnings,
        })
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        action: &Action<'_>,
        request: hyper::Request<Vec<u8>>,
    ) -> Result<Reply<T>, Failure> {
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(|e| Failure::from_client(&e))?;
        let status = response.status();
        let warnings: Vec<String> = response
            .headers()
            .get_all(hyper::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(warnings::parse)
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Failure::from_answer(action, status.as_u16(), &body));
        }
        let value = serde_json::from_slice(&body).map_err(|e| Failure::Garbled(e.to_string()))?;
        Ok(Reply { value, warnings })
    }
}
