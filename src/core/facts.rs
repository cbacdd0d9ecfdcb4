//! One write as the rules see it: read once from the request (`admission::facts_of`) and handed to
//! both doors of the core. The rules that are read straight off a write live here, once.

use std::borrow::Cow;

use serde::Deserialize;

/// The label `argo resubmit` puts on the Workflow it creates (SPEC 4.5).
pub const RESUBMITTED_FROM_LABEL: &str = "workflows.argoproj.io/resubmitted-from-workflow";

/// The request's operation, spelled on the wire as `CREATE`, `UPDATE`, ... PUT and PATCH both
/// arrive as UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Update,
        Operation::Delete,
        Operation::Connect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// What the rules need to know about one write.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub operation: Operation,
    /// `namespace/name`, for messages.
    pub workflow: Cow<'a, str>,
    /// `O`: the stage on the stored object (`None`: no label, and always on CREATE).
    pub from: Option<&'a str>,
    /// `N`: the stage on the incoming object.
    pub to: Option<&'a str>,
    /// The incoming object carries [`RESUBMITTED_FROM_LABEL`].
    pub resubmitted: bool,
    /// An UPDATE whose `object.metadata.resourceVersion` is set and differs from the stored one's:
    /// the API server will refuse it with 409 Conflict.
    pub stale: bool,
    pub username: &'a str,
    pub groups: &'a [String],
    /// The stored object's history annotation (`None` on CREATE: there is no stored object).
    pub stored_history: Option<Cow<'a, str>>,
    pub incoming_history: Option<Cow<'a, str>>,
    /// The stored object's override annotation (`None` on CREATE).
    pub stored_override: Option<Cow<'a, str>>,
    pub incoming_override: Option<Cow<'a, str>>,
    /// The pipeline that judges the write ([`super::Policy::pipeline_for`]): the stored object's on
    /// UPDATE, the incoming object's on CREATE. `None`: no pipeline takes the object, not judged.
    pub pipeline: Option<usize>,
    /// The pipeline the incoming object belongs to (the same as `pipeline` on CREATE).
    pub incoming_pipeline: Option<usize>,
}

impl Facts<'_> {
    pub fn is_create(&self) -> bool {
        self.operation == Operation::Create
    }

    /// CREATE and UPDATE of an object that carries the stage label, before or after the write, are
    /// judged; DELETE and CONNECT pass without judgement (SPEC 4.1), and so does a write that leaves an
    /// object unlabelled: the webhooks' objectSelector never sends one, and the offline commands answer
    /// what the cluster does.
    pub fn is_judged(&self) -> bool {
        matches!(self.operation, Operation::Create | Operation::Update)
            && (self.from.is_some() || self.to.is_some())
            && self.pipeline.is_some()
    }

    /// An UPDATE that moves a staged object into another pipeline (or out of every pipeline): denied
    /// as `pipeline-changed` unless a permitted override forces it.
    pub fn pipeline_changed(&self) -> bool {
        self.operation == Operation::Update
            && self.from.is_some()
            && self.incoming_pipeline != self.pipeline
    }

    /// The stored history, when there is one to build on: the stored object carries the stage label.
    /// Writes to unlabelled objects are never seen, so their history annotation was never checked
    /// (a client could create an unlabelled Workflow with a forged history, then label it): a
    /// Workflow that enters its first stage starts a fresh history. On CREATE there is no stored
    /// object, so client-supplied history is discarded (SPEC 4.4).
    pub fn trusted_history(&self) -> Option<&str> {
        self.from.and(self.stored_history.as_deref())
    }

    /// `O ≠ N` on a judged write.
    pub fn stage_changed(&self) -> bool {
        self.is_judged() && self.from != self.to
    }

    /// The reason of an override request (SPEC 3): the incoming object carries the override
    /// annotation with a non-empty value that differs from the stored object's.
    pub fn override_reason(&self) -> Option<&str> {
        self.incoming_override
            .as_deref()
            .filter(|r| !r.is_empty() && Some(*r) != self.stored_override.as_deref())
    }
}
