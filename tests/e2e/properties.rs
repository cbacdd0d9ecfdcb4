//! Property tests of the admission core, in process: random sequences of proposed stage changes go
//! through the mutating webhook, a strict RFC 6902 application of its patch, and the validating webhook,
//! the way the API server runs them; admitted results are stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use proptest::prelude::*;
use serde_json::{Value, json};
use stage_guard::admission::{Webhook, answer};
use stage_guard::core::Policy;
use stage_guard::core::history;

const GRAPH: &str = "\
stages: [implementing, reviewing, testing, merging, done]
entry: [implementing, reviewing]
transitions:
  implementing: [reviewing]
  reviewing: [testing, implementing]
  testing: [merging, implementing]
  merging: [done, testing]
history:
  limit: 1000
";

/// The oracle: the legal moves of GRAPH written out again as data, `None` for "no label". It is
/// independent of the code under test (which parses GRAPH into its own graph): the two are written
/// separately and must agree.
const LEGAL: &[(Option<&str>, &str)] = &[
    (None, "implementing"),
    (None, "reviewing"),
    (Some("implementing"), "reviewing"),
    (Some("reviewing"), "testing"),
    (Some("reviewing"), "implementing"),
    (Some("testing"), "merging"),
    (Some("testing"), "implementing"),
    (Some("merging"), "done"),
    (Some("merging"), "testing"),
];

fn is_legal(from: Option<&str>, to: &str) -> bool {
    LEGAL.contains(&(from, to))
}

/// Proposed stages: the configured ones, an unknown one, and "no label".
const PROPOSALS: [Option<&str>; 7] = [
    Some("implementing"),
    Some("reviewing"),
    Some("testing"),
    Some("merging"),
    Some("done"),
    Some("qa"),
    None,
];

#[derive(Debug, Clone)]
struct Proposal {
    to: Option<&'static str>,
    user: &'static str,
    /// The client also rewrites the history annotation (drops it or sends junk).
    history_edit: Option<Option<&'static str>>,
    /// Something else changes too, like the Argo controller's status writes.
    touch_status: bool,
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (
        prop::sample::select(PROPOSALS.to_vec()),
        prop::sample::select(vec!["alice", "system:serviceaccount:argo:argo-workflow"]),
        prop::option::weighted(0.2, prop::option::of(Just("[]"))),
        any::<bool>(),
    )
        .prop_map(|(to, user, history_edit, touch_status)| Proposal {
            to,
            user,
            history_edit,
            touch_status,
        })
}

fn review(op: &str, user: &str, object: &Value, old: &Value, uid: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{uid}"), "namespace": "argo", "name": "wf", "operation": op,
            "userInfo": {"username": user},
            "object": object, "oldObject": if op == "CREATE" { Value::Null } else { old.clone() },
            "dryRun": false,
        }
    }))
    .unwrap()
}

fn response(policy: &Policy, webhook: Webhook, body: &[u8], now: SystemTime) -> Value {
    let a = answer(policy, webhook, body, now).expect("a well-formed review is answered");
    serde_json::from_slice(&a.body).unwrap()
}

/// Applies the mutating webhook's patch with strict RFC 6902 semantics, as the API server does.
fn apply(object: &Value, resp: &Value) -> Value {
    let mut doc = object.clone();
    if let Some(p) = resp["response"]["patch"].as_str() {
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut doc, &patch)
            .expect("the webhook's patch applies to the object as sent");
    } else {
        assert!(resp["response"].get("patchType").is_none());
    }
    doc
}

fn label(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"]["current-stage"].as_str()
}

fn stored_history(obj: &Value) -> Vec<history::Entry> {
    match obj["metadata"]["annotations"]["stage-guard.io/history"].as_str() {
        Some(raw) => history::parse(raw).expect("stored history always parses"),
        None => Vec::new(),
    }
}

fn with_change(stored: &Value, p: &Proposal) -> Value {
    let mut obj = stored.clone();
    match p.to {
        Some(s) => obj["metadata"]["labels"]["current-stage"] = json!(s),
        None => {
            if let Some(labels) = obj["metadata"]["labels"].as_object_mut() {
                labels.remove("current-stage");
            }
        }
    }
    match p.history_edit {
        Some(Some(junk)) => obj["metadata"]["annotations"]["stage-guard.io/history"] = json!(junk),
        Some(None) => {
            if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                a.remove("stage-guard.io/history");
            }
        }
        None => {}
    }
    if p.touch_status {
        obj["status"]["progress"] = json!(format!(
            "{}/10",
            obj["status"]["progress"].as_str().map_or(0, |s| s.len())
        ));
    }
    obj
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn admitted_sequences_keep_history_a_path_and_mutation_idempotent(
        proposals in prop::collection::vec(proposal(), 1..25)
    ) {
        let policy = Policy::from_yaml(GRAPH).unwrap();
        let mut stored = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf", "namespace": "argo", "labels": {"app": "x"}},
            "spec": {"entrypoint": "main"}, "status": {}
        });
        let mut clock = UNIX_EPOCH + Duration::from_secs(1_795_680_000);
        for (i, p) in proposals.iter().enumerate() {
            clock += Duration::from_secs(60);
            let before = stored.clone();
            let incoming = with_change(&stored, p);
            let uid = i as u64 * 10;

            let m = response(&policy, Webhook::Mutate, &review("UPDATE", p.user, &incoming, &stored, uid), clock);
            prop_assert_eq!(&m["response"]["allowed"], &json!(true), "the mutating webhook never denies");
            let mutated = apply(&incoming, &m);

            // Reinvocation: a second call on the mutated object changes nothing, even later.
            let again = response(
                &policy, Webhook::Mutate,
                &review("UPDATE", p.user, &mutated, &stored, uid + 1), clock + Duration::from_secs(5),
            );
            prop_assert!(again["response"].get("patch").is_none(), "second call patched: {}", again);

            let v = response(&policy, Webhook::Validate, &review("UPDATE", p.user, &mutated, &stored, uid + 2), clock);
            prop_assert!(v["response"].get("patch").is_none() && v["response"].get("patchType").is_none());
            let allowed = v["response"]["allowed"].as_bool().unwrap();

            // The oracle: exactly the unchanged stage and the graph's edges are admitted.
            let (from, to) = (label(&stored), p.to);
            let legal = from == to || to.is_some_and(|n| is_legal(from, n));
            prop_assert_eq!(allowed, legal, "{:?} -> {:?}: {}", from, to, v);

            if allowed {
                stored = mutated;
            } else {
                prop_assert_eq!(v["response"]["status"]["code"].as_u64(), Some(403));
                prop_assert_eq!(&stored, &before, "a denied change leaves the stored object untouched");
            }

            // An unlabelled object's history annotation is not stage-guard's (writes to it are not
            // judged, the webhooks' objectSelector does not even send them): nothing to check.
            if label(&stored).is_none() {
                continue;
            }
            // The stored history of a labelled object is a path through the graph that ends at the
            // stored label.
            let entries = stored_history(&stored);
            let mut at = None::<String>;
            for e in &entries {
                prop_assert_eq!(&e.from, &at, "history is contiguous: {:?}", entries);
                let to = e.to.as_deref().expect("every admitted change has a target here");
                prop_assert!(is_legal(e.from.as_deref(), to), "not a legal move: {:?}", e);
                prop_assert!(e.override_.is_none());
                at = e.to.clone();
            }
            prop_assert_eq!(at.as_deref(), label(&stored));
            // It starts where the Workflow entered the pipeline, whatever history it carried before.
            prop_assert!(entries.first().is_some_and(|e| e.from.is_none()), "{:?}", entries);
        }
    }
}
