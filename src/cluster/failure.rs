//! What can go wrong between the commands and the API server, each as one line a person can act on,
//! and the exit code it ends with: 1 when the cluster refused a move (an admission webhook or
//! policy said no), 2 for everything else.

use kube::core::Status;

use super::client::ConnectError;

/// The request a failure happened in, for its message.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// The RBAC verb: `get`, `list`, `patch`.
    pub verb: &'static str,
    /// `None`: every namespace.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Action<'_> {
    /// `in namespace "argo"`, or `in every namespace (cluster scope)`.
    fn scope(&self) -> String {
        match self.namespace {
            Some(ns) => format!("in namespace {ns:?}"),
            None => "in every namespace (cluster scope)".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot reach the API server: {0}")]
    Unreachable(String),
    #[error(
        "the API server does not accept these credentials (401 Unauthorized): check the kubeconfig user's token or certificate"
    )]
    Unauthorized,
    /// RBAC said no: the verb and the resource the user lacks.
    #[error("no permission to {verb} workflows.argoproj.io {scope}: {message}")]
    Forbidden {
        verb: &'static str,
        scope: String,
        message: String,
    },
    #[error("workflow {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(
        "the API server does not serve argoproj.io/v1alpha1 workflows (are Argo Workflows' CRDs installed?): {0}"
    )]
    NotServed(String),
    /// An admission webhook (or a ValidatingAdmissionPolicy) refused the write: its message.
    #[error("refused: {0}")]
    Refused(String),
    /// The object changed since it was read (the write's resourceVersion precondition failed).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(
        "workflow {namespace}/{name} kept changing while it was moved: {attempts} writes in a row lost to a concurrent writer (409 Conflict); try again"
    )]
    KeptConflicting {
        namespace: String,
        name: String,
        attempts: usize,
    },
    #[error(
        "the Workflows changed too much while they were read page by page (410 Gone: {0}); run it again"
    )]
    ListExpired(String),
    #[error("the API server answered {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("the API server's answer does not parse: {0}")]
    Garbled(String),
    #[error("the Kubernetes client failed: {0}")]
    Client(String),
}

impl Failure {
    /// 1: the cluster refused the move; 2: anything else kept the command from doing its job.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            _ => 2,
        }
    }

    /// An error answer (status `code`, body `body`) to `action`.
    pub fn from_answer(action: &Action<'_>, code: u16, body: &[u8]) -> Failure {
        let text = String::from_utf8_lossy(body);
        let status: Option<Status> = serde_json::from_slice(body).ok();
        let message = status
            .as_ref()
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| one_line(&text));
        let reason = status
            .as_ref()
            .map(|s| s.reason.clone())
            .unwrap_or_default();
        if is_admission_refusal(&message) {
            return Failure::Refused(one_line(&message));
        }
        match code {
            401 => Failure::Unauthorized,
            403 => Failure::Forbidden {
                verb: action.verb,
                scope: action.scope(),
                message: one_line(&message),
            },
            404 => match (status.as_ref().and_then(|s| s.details.as_ref()), action) {
                // A Workflow that is not there names itself in the details; a path the API server
                // does not serve has none (and usually no Status at all).
                (
                    Some(details),
                    Action {
                        namespace: Some(ns),
                        name: Some(name),
                        ..
                    },
                ) if details.name == *name => Failure::NotFound {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                },
                _ => Failure::NotServed(one_line(&message)),
            },
            409 => Failure::Conflict(one_line(&message)),
            410 => Failure::ListExpired(one_line(&message)),
            _ => Failure::Api {
                code,
                reason: if reason.is_empty() {
                    "(no reason)".to_owned()
                } else {
                    reason
                },
                message: one_line(&message),
            },
        }
    }

    /// A request that got no answer (connection, TLS, authentication plugin).
    pub fn from_client(error: &kube::Error) -> Failure {
        match error {
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                Failure::Unreachable(chain(error))
            }
            _ => Failure::Client(chain(error)),
        }
    }
}

/// An admission webhook's denial (`admission webhook "x" denied the request: ...`) or a
/// ValidatingAdmissionPolicy's (`ValidatingAdmissionPolicy 'x' with binding 'y' denied request: ...`).
fn is_admission_refusal(message: &str) -> bool {
    (message.contains("admission webhook \"") && message.contains("denied the request"))
        || (message.contains("ValidatingAdmissionPolicy") && message.contains("denied request"))
}

/// An error and its causes in one line, each said once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    one_line(&parts.join(": "))
}

/// Whitespace runs (newlines included) as single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(code: u16, body: serde_json::Value) -> Failure {
        let action = Action {
            verb: "patch",
            namespace: Some("argo"),
            name: Some("task-7"),
        };
        Failure::from_answer(&action, code, body.to_string().as_bytes())
    }

    fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
               "reason": reason, "message": message,
               "details": {"name": "task-7", "group": "argoproj.io", "kind": "workflows"}})
    }

    #[test]
    fn a_webhook_denial_is_a_refusal_with_its_message() {
        let f = answer(
            403,
            status(
                403,
                "Forbidden",
                "admission webhook \"validate.stage-guard.io\" denied the request: stage change ...",
            ),
        );
        assert_eq!(f.exit_code(), 1);
        assert_eq!(
            f.to_string(),
            "refused: admission webhook \"validate.stage-guard.io\" denied the request: stage change ..."
        );
        let vap = answer(
            422,
            status(
                422,
                "Invalid",
                "workflows.argoproj.io \"task-7\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: skip",
            ),
        );
        assert!(matches!(vap, Failure::Refused(_)));
    }

    #[test]
    fn rbac_names_the_verb_and_the_resource() {
        let f = answer(
            403,
            status(
                403,
                "Forbidden",
                "workflows.argoproj.io \"task-7\" is forbidden: User \"eve\" cannot patch resource \"workflows\" in API group \"argoproj.io\" in the namespace \"argo\"",
            ),
        );
        assert_eq!(f.exit_code(), 2);
        assert_eq!(
            f.to_string(),
            "no permission to patch workflows.argoproj.io in namespace \"argo\": workflows.argoproj.io \"task-7\" is forbidden: User \"eve\" cannot patch resource \"workflows\" in API group \"argoproj.io\" in the namespace \"argo\""
        );
    }

    #[test]
    fn not_found_tells_a_missing_workflow_from_a_missing_resource_type() {
        assert_eq!(
            answer(
                404,
                status(
                    404,
                    "NotFound",
                    "workflows.argoproj.io \"task-7\" not found"
                )
            )
            .to_string(),
            "workflow argo/task-7 not found"
        );
        let action = Action {
            verb: "get",
            namespace: Some("argo"),
            name: Some("task-7"),
        };
        assert!(matches!(
            Failure::from_answer(&action, 404, b"404 page not found\n"),
            Failure::NotServed(m) if m == "404 page not found"
        ));
    }

    #[test]
    fn other_answers_keep_code_reason_and_message_on_one_line() {
        assert!(matches!(
            answer(409, status(409, "Conflict", "the object has been modified")),
            Failure::Conflict(_)
        ));
        assert_eq!(answer(401, json!({})).to_string().lines().count(), 1);
        assert_eq!(
            answer(
                500,
                status(500, "InternalError", "failed calling webhook\n\"x\"")
            )
            .to_string(),
            "the API server answered 500 InternalError: failed calling webhook \"x\""
        );
    }
}
