//! `stage-guard next NAME`: the stages a Workflow may move to from where it is.

use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Api;
use kube::api::PostParams;

use crate::cli::steer::NextArgs;
use crate::cluster::workflows::stored_from_meta;
use crate::core::audit::timeline;
use crate::core::moves::open_from;
use crate::report::next::{NextView, Requester};

use super::session::Session;
use super::{Program, Stop};

pub async fn run(args: NextArgs, program: Program) -> Result<u8, Stop> {
    let s = Session::open(&args.cluster).await?;
    let meta = s.workflows.get(&s.namespace, &args.name).await?;
    let w = stored_from_meta(&s.policy, &meta);
    let open = open_from(&s.policy, &w);
    let in_stage_for = timeline(&s.policy, &w, SystemTime::now()).in_stage_for;
    let me = if open.forced_only.is_empty() {
        None
    } else {
        whoami(&s.client).await
    };
    let view = NextView {
        namespace: &s.namespace,
        name: &args.name,
        open: &open,
        in_stage_for,
        override_: &s.policy.override_,
        requester: me.as_ref(),
        program: program.as_str(),
    };
    print!("{}", view.text());
    Ok(0)
}

/// Who the API server takes the caller for. Only a hint for `next` (whether the caller may force a
/// change), so a server that does not answer it (before Kubernetes 1.28) leaves it out.
async fn whoami(client: &kube::Client) -> Option<Requester> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    let user = review.status?.user_info?;
    Some(Requester {
        username: user.username?,
        groups: user.groups.unwrap_or_default(),
    })
}
