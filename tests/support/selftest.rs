//! Tests of the harness itself, against in-process fake webhooks: they show that the API server
//! simulation orders, retries and judges like kube-apiserver, so the end-to-end tests can fail.

use crate::support::apiserver::{ApiServer, Outcome, Patch};
use crate::support::fixtures::*;
use crate::support::patch::{apply_json_patch, apply_merge_patch, pointer_token};
use crate::support::review::{Hook, Operation, UserInfo, verify_response};
use crate::support::store::{Store, StoreError};
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

fn uid_of(review: &Value) -> String {
    review["request"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A well-formed answer echoing the uid, with `extra` merged into `response`.
fn answer(review: &Value, extra: Value) -> (u16, Vec<u8>) {
    let mut response = json!({"uid": uid_of(review), "allowed": true});
    if let (Some(r), Some(e)) = (response.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    (200, serde_json::to_vec(&body).unwrap())
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
}

fn allow_all() -> ApiServer {
    ApiServer::with_fake(|_, review| answer(review, json!({})))
}

// === strict patch application ===

#[test]
fn json_patch_is_strict() {
    let doc = json!({"metadata": {"name": "w", "labels": {"a": "1"}}, "list": [1, 2]});
    let add_missing_parent =
        json!([{"op": "add", "path": "/metadata/annotations/x", "value": "v"}]);
    assert!(apply_json_patch(&doc, &add_missing_parent).is_err());
    let remove_missing = json!([{"op": "remove", "path": "/metadata/labels/b"}]);
    assert!(apply_json_patch(&doc, &remove_missing).is_err());
    let replace_missing = json!([{"op": "replace", "path": "/metadata/labels/b", "value": "2"}]);
    assert!(apply_json_patch(&doc, &replace_missing).is_err());
    let remove_dash = json!([{"op": "remove", "path": "/list/-"}]);
    assert!(apply_json_patch(&doc, &remove_dash).is_err());
    let failed_test = json!([{"op": "test", "path": "/metadata/name", "value": "other"}]);
    assert!(apply_json_patch(&doc, &failed_test).is_err());
    assert!(
        apply_json_patch(&doc, &json!({"op": "add"})).is_err(),
        "not an array"
    );
    // Nothing of a failing patch is applied.
    let half = json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"},
                      {"op": "remove", "path": "/nope"}]);
    assert!(apply_json_patch(&doc, &half).is_err());

    let key = format!("/metadata/annotations/{}", pointer_token(HISTORY));
    assert_eq!(key, "/metadata/annotations/stage-guard.io~1history");
    let good = json!([{"op": "add", "path": "/metadata/annotations", "value": {}},
                      {"op": "add", "path": key, "value": "[]"},
                      {"op": "add", "path": "/list/-", "value": 3}]);
    let out = apply_json_patch(&doc, &good).unwrap();
    assert_eq!(out["metadata"]["annotations"][HISTORY], "[]");
    assert_eq!(out["list"], json!([1, 2, 3]));
    assert_eq!(pointer_token("a~b/c"), "a~0b~1c");
}

#[test]
fn merge_patch_follows_rfc7386() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1]}});
    let out = apply_merge_patch(
        &doc,
        &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [2]}}),
    );
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [2]}})
    );
}

// === store ===

#[test]
fn store_compare_and_swap_rejects_a_stale_version() {
    let store = Store::new();
    let first = store
        .insert_new("argo", "w", json!({"metadata": {"name": "w"}}))
        .unwrap();
    let rv1 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        store.insert_new("argo", "w", json!({"metadata": {"name": "w"}})),
        Err(StoreError::AlreadyExists)
    );
    let second = store
        .compare_and_swap(
            "argo",
            "w",
            &rv1,
            json!({"metadata": {"name": "w"}, "x": 1}),
        )
        .unwrap();
    let rv2 = second["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rv1, rv2);
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    assert_eq!(
        store.compare_and_swap("argo", "w", &rv1, json!({"metadata": {}})),
        Err(StoreError::Conflict)
    );
    assert_eq!(store.versions("argo", "w").len(), 2);
    assert_eq!(store.get("argo", "w").unwrap()["x"], 1);
}

// === response verification ===

#[test]
fn responses_are_checked_like_the_api_server() {
    let ok = |resp: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp});
    let bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    let check = |hook, status, v: Value| verify_response(hook, "u1", status, &bytes(v));

    assert!(
        check(
            Hook::Validating,
            200,
            ok(json!({"uid": "u1", "allowed": true}))
        )
        .unwrap()
        .allowed
    );
    assert!(
        check(
            Hook::Validating,
            403,
            ok(json!({"uid": "u1", "allowed": false}))
        )
        .is_err(),
        "non-200"
    );
    assert!(verify_response(Hook::Validating, "u1", 200, b"not json").is_err());
    assert!(
        check(
            Hook::Validating,
            200,
            ok(json!({"uid": "u2", "allowed": true}))
        )
        .is_err(),
        "uid"
    );
    assert!(
        check(
            Hook::Validating,
            200,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
        )
        .is_err()
    );
    assert!(
        check(
            Hook::Validating,
            200,
            json!({"kind": "AdmissionReview", "response": {"uid": "u1", "allowed": true}})
        )
        .is_err()
    );
    assert!(check(Hook::Validating, 200, json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "response": {"uid": "u1", "allowed": true}})).is_err());
    let patch = b64(&json!([{"op": "add", "path": "/x", "value": 1}]));
    assert!(
        check(
            Hook::Validating,
            200,
            ok(json!({"uid": "u1", "allowed": true, "patch": patch, "patchType": "JSONPatch"}))
        )
        .is_err()
    );
    assert!(
        check(
            Hook::Mutating,
            200,
            ok(json!({"uid": "u1", "allowed": true, "patch": patch}))
        )
        .is_err(),
        "patch without type"
    );
    assert!(
        check(
            Hook::Mutating,
            200,
            ok(json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch"}))
        )
        .is_err(),
        "type without patch"
    );
    assert!(
        check(
            Hook::Mutating,
            200,
            ok(json!({"uid": "u1", "allowed": true, "patch": patch, "patchType": "MergePatch"}))
        )
        .is_err()
    );
    let not_a_list = b64(&json!({"op": "add"}));
    assert!(
        check(
            Hook::Mutating,
            200,
            ok(
                json!({"uid": "u1", "allowed": true, "patch": not_a_list, "patchType": "JSONPatch"})
            )
        )
        .is_err()
    );

    // Go decodes a number array into []byte, so that form is accepted too.
    let raw: Vec<u8> =
        serde_json::to_vec(&json!([{"op": "add", "path": "/x", "value": 1}])).unwrap();
    let v = check(
        Hook::Mutating,
        200,
        ok(json!({"uid": "u1", "allowed": true, "patch": raw, "patchType": "JSONPatch"})),
    )
    .unwrap();
    assert_eq!(v.patch.unwrap()[0]["path"], "/x");

    let v = check(Hook::Validating, 200, ok(json!({"uid": "u1"}))).unwrap();
    assert!(!v.allowed, "missing `allowed` is a denial");
    let v = check(
        Hook::Validating,
        200,
        ok(json!({"uid": "u1", "allowed": true, "patchType": null})),
    )
    .unwrap();
    assert_eq!(
        v.problems.len(),
        1,
        "a patchType key on a validating response is recorded"
    );

    let v = check(Hook::Validating, 200, ok(json!({"uid": "u1", "allowed": true,
        "warnings": ["fine", "two\nlines", "x".repeat(121)],
        "auditAnnotations": {"decision": "allowed", "bad/key": "v", "-bad": "v", "k".repeat(64): "v"}}))).unwrap();
    assert_eq!(v.warnings, vec!["fine".to_string()]);
    assert_eq!(v.audit.keys().collect::<Vec<_>>(), vec!["decision"]);
    assert_eq!(v.problems.len(), 5, "{:?}", v.problems);
}

// === the API server's order of operations ===

#[tokio::test]
async fn create_with_generate_name_hides_the_name_from_mutating_only() {
    let seen = Arc::new(Mutex::new(Vec::<(Hook, Value)>::new()));
    let log = seen.clone();
    let api = ApiServer::with_fake(move |hook, review| {
        log.lock().unwrap().push((hook, review.clone()));
        answer(review, json!({}))
    });
    let stored = api
        .create(
            &UserInfo::workflow_step(),
            workflow_from_template("agent-pipeline", Some(PR_CREATED)),
            false,
        )
        .await
        .unwrap();
    let name = stored.object["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(name.starts_with("agent-pipeline-") && name.len() == "agent-pipeline-".len() + 5);
    for key in ["uid", "creationTimestamp", "resourceVersion"] {
        assert!(stored.object["metadata"][key].is_string(), "{key}");
    }
    assert_eq!(stored.object["metadata"]["generation"], 1);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let (m, v) = (&seen[0].1["request"], &seen[1].1["request"]);
    assert_eq!((seen[0].0, seen[1].0), (Hook::Mutating, Hook::Validating));
    assert!(m.get("name").is_none());
    assert!(m["object"]["metadata"].get("name").is_none());
    assert!(m["object"]["metadata"].get("uid").is_none());
    assert!(m["object"]["metadata"].get("creationTimestamp").is_none());
    assert_eq!(v["name"], json!(name));
    assert!(v["object"]["metadata"]["uid"].is_string());
    assert_ne!(m["uid"], v["uid"]);
    for r in [m, v] {
        assert_eq!(r["operation"], "CREATE");
        assert_eq!(r["oldObject"], Value::Null);
        assert!(r.as_object().unwrap().contains_key("oldObject"));
        assert_eq!(r["dryRun"], false);
        assert_eq!(
            r["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"})
        );
        assert_eq!(
            r["kind"],
            json!({"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"})
        );
        assert_eq!(
            r["requestResource"],
            json!({"group": "argoproj.io", "version": "v1alpha1", "resource": "workflows"})
        );
        assert_eq!(r["namespace"], "argo");
        assert_eq!(
            r["userInfo"]["username"],
            "system:serviceaccount:argo:argo-workflow"
        );
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn stale_put_is_mutated_then_refused_with_409_before_validation() {
    let api = allow_all();
    let first = api
        .create(&UserInfo::controller(), workflow_named("w", None), false)
        .await
        .unwrap()
        .object;
    let second = api
        .update(
            &UserInfo::controller(),
            controller_first_update(&first),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        second.object["metadata"]["generation"], 2,
        "status changed: generation bumped"
    );
    let label_only = api
        .update(
            &UserInfo::controller(),
            with_label(&second.object, "x", "y"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        label_only.object["metadata"]["generation"], 2,
        "metadata-only change keeps the generation"
    );

    let err = api
        .update(
            &UserInfo::controller(),
            stale_put(&first, READY_FOR_QA),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(err.calls_to(Hook::Mutating).len(), 1);
    assert_eq!(err.calls_to(Hook::Validating).len(), 0);
    let mut no_rv = second.object.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let err = api
        .update(&UserInfo::controller(), no_rv, false)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    api.assert_no_violations();
}

#[tokio::test]
async fn patch_is_reapplied_and_readmitted_after_losing_a_race() {
    let api_cell: Arc<OnceLock<ApiServer>> = Arc::new(OnceLock::new());
    let cell = api_cell.clone();
    let armed = Arc::new(AtomicBool::new(false));
    let trigger = armed.clone();
    let api = ApiServer::with_fake(move |hook, review| {
        // During the first validating call after arming, another writer lands a change.
        if hook == Hook::Validating && trigger.swap(false, Ordering::SeqCst) {
            let api = cell.get().unwrap();
            let stored = api.store().get("argo", "w").unwrap();
            let rv = stored["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
            api.store()
                .compare_and_swap("argo", "w", &rv, with_label(&stored, "other", "writer"))
                .unwrap();
        }
        answer(review, json!({}))
    });
    let _ = api_cell.set(api.clone());
    api.create(
        &UserInfo::controller(),
        workflow_named("w", Some(PR_CREATED)),
        false,
    )
    .await
    .unwrap();
    armed.store(true, Ordering::SeqCst);

    let out = api
        .patch(
            &UserInfo::workflow_step(),
            "argo",
            "w",
            Patch::Merge(stage_merge_patch(READY_FOR_QA)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        out.object["metadata"]["labels"]["other"], "writer",
        "the racing write survives"
    );
    assert_eq!(out.object["metadata"]["labels"][STAGE_LABEL], READY_FOR_QA);
    let (m, v) = (out.calls_to(Hook::Mutating), out.calls_to(Hook::Validating));
    assert_eq!((m.len(), v.len()), (2, 2), "both phases ran again");
    assert_ne!(m[0].uid, m[1].uid);
    assert_eq!(
        m[1].request["request"]["oldObject"]["metadata"]["labels"]["other"],
        "writer"
    );
    assert_eq!(m[0].request["request"]["options"]["kind"], "UpdateOptions");

    api.patch(
        &UserInfo::workflow_step(),
        "argo",
        "w",
        Patch::Json(label_removal_json_patch()),
        false,
    )
    .await
    .unwrap();
    let stored = api.store().get("argo", "w").unwrap();
    assert!(stored["metadata"]["labels"].get(STAGE_LABEL).is_none());
    let err = api
        .patch(
            &UserInfo::workflow_step(),
            "argo",
            "w",
            Patch::Json(label_removal_json_patch()),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.calls.len()),
        (422, 0),
        "a JSON patch that does not apply never reaches admission"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn bad_webhook_answers_become_internal_errors_and_violations() {
    let api = ApiServer::with_fake(|hook, review| match hook {
        // An `add` under a parent that the object does not have.
        Hook::Mutating => answer(
            review,
            json!({"patchType": "JSONPatch",
            "patch": b64(&json!([{"op": "add", "path": "/metadata/annotations/a", "value": "b"}]))}),
        ),
        Hook::Validating => answer(review, json!({})),
    });
    let err = api
        .create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    assert!(
        err.message
            .contains("failed calling webhook \"mutate.stage-guard.io\""),
        "{}",
        err.message
    );
    assert_eq!(api.violations().len(), 1);
    assert!(api.store().is_empty());

    let api = ApiServer::with_fake(|_, review| {
        let mut a = answer(review, json!({}));
        a.0 = 500;
        a
    });
    let err = api
        .create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(!api.violations().is_empty());
}

#[tokio::test]
async fn denials_carry_the_webhook_status() {
    let api = ApiServer::with_fake(|hook, review| match hook {
        Hook::Mutating => answer(review, json!({})),
        Hook::Validating => answer(
            review,
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "no"},
            "auditAnnotations": {"decision": "denied", "reason": "skip"}}),
        ),
    });
    let err = api
        .create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "admission webhook \"validate.stage-guard.io\" denied the request: no"
    );
    assert_eq!(err.validating_audit("reason"), Some("skip"));

    let api = ApiServer::with_fake(|_, review| {
        answer(review, json!({"allowed": false, "status": {"code": 200}}))
    });
    let err = api
        .create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "codes under 400 become 400");
    assert!(
        err.message
            .ends_with("denied the request without explanation")
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn a_reinvocation_that_changes_the_object_is_a_violation() {
    let counter = Arc::new(AtomicUsize::new(0));
    let api = ApiServer::with_fake(move |hook, review| match hook {
        Hook::Mutating => {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            answer(
                review,
                json!({"patchType": "JSONPatch",
                "patch": b64(&json!([{"op": "add", "path": "/metadata/labels/stamp", "value": n.to_string()}]))}),
            )
        }
        Hook::Validating => answer(review, json!({})),
    });
    api.set_reinvocation(true);
    let out = api
        .create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap();
    assert_eq!(out.calls_to(Hook::Mutating).len(), 2);
    assert_eq!(api.violations().len(), 1, "{:?}", api.violations());
    assert!(api.violations()[0].contains("reinvocation"));
}

#[tokio::test]
async fn dry_run_is_admitted_but_not_stored_and_delete_removes() {
    let api = allow_all();
    let out = api
        .create(&UserInfo::bob(), workflow_named("w", None), true)
        .await
        .unwrap();
    assert!(api.store().is_empty());
    assert_eq!(out.calls[0].request["request"]["dryRun"], true);
    assert_eq!(
        out.calls[0].request["request"]["options"]["dryRun"],
        json!(["All"])
    );

    api.create(&UserInfo::bob(), workflow_named("w", None), false)
        .await
        .unwrap();
    let before = api.store().get("argo", "w").unwrap();
    api.patch(
        &UserInfo::bob(),
        "argo",
        "w",
        Patch::Merge(stage_merge_patch(PR_CREATED)),
        true,
    )
    .await
    .unwrap();
    assert_eq!(api.store().get("argo", "w").unwrap(), before);

    let out = api
        .delete(&UserInfo::bob(), "argo", "w", false)
        .await
        .unwrap();
    assert!(
        out.calls
            .iter()
            .all(|c| c.operation == Operation::Delete && c.outcome == Outcome::Allowed)
    );
    assert_eq!(out.calls[0].request["request"]["object"], Value::Null);
    assert!(api.store().get("argo", "w").is_none());
    api.assert_no_violations();
}

/// A replica for the balancer's test: its webhook port says which replica it is (one byte) and then
/// echoes; its admin port answers `/readyz` with 200 or 503 as `ready` says.
async fn fake_replica(
    id: u8,
    ready: Arc<AtomicBool>,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (webhook.local_addr().unwrap(), admin.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = webhook.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if s.write_all(&[id]).await.is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = admin.accept().await {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let answer: &[u8] = if ready.load(Ordering::SeqCst) {
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
            };
            let _ = s.write_all(answer).await;
        }
    });
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_spreads_connections_and_skips_an_unready_replica() {
    use crate::support::balancer::Balancer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let step = std::time::Duration::from_secs(5);
    let ready = [
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    ];
    let a = fake_replica(0, ready[0].clone()).await;
    let b = fake_replica(1, ready[1].clone()).await;
    let balancer = Balancer::start(&[a, b]).unwrap();
    let balancer = &balancer;
    let wait_for = |want: [bool; 2]| async move {
        let deadline = std::time::Instant::now() + step;
        while [balancer.ready(0), balancer.ready(1)] != want {
            assert!(
                std::time::Instant::now() < deadline,
                "readiness never became {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let connect = || async move {
        let mut s = tokio::net::TcpStream::connect(balancer.addr())
            .await
            .unwrap();
        let mut id = [0u8; 1];
        tokio::time::timeout(step, s.read_exact(&mut id))
            .await
            .expect("the replica's byte")
            .unwrap();
        (id[0], s)
    };
    wait_for([true, true]).await;

    // Round robin per connection.
    let mut seen = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..4 {
        let (id, s) = connect().await;
        seen.push(id);
        kept.push((id, s));
    }
    seen.sort();
    assert_eq!(seen, [0, 0, 1, 1]);

    // Replica 1 turns unready: new connections all go to replica 0, open ones stay where they are.
    ready[1].store(false, Ordering::SeqCst);
    wait_for([true, false]).await;
    for _ in 0..3 {
        assert_eq!(connect().await.0, 0);
    }
    let (_, to_one) = kept.iter_mut().find(|(id, _)| *id == 1).unwrap();
    to_one.write_all(b"still there").await.unwrap();
    let mut echo = [0u8; 11];
    tokio::time::timeout(step, to_one.read_exact(&mut echo))
        .await
        .expect("the echo")
        .unwrap();
    assert_eq!(&echo, b"still there");
    assert_eq!((balancer.connections(0), balancer.connections(1)), (5, 2));

    // A replica started in its place gets connections once ready.
    let ready_c = Arc::new(AtomicBool::new(true));
    let c = fake_replica(2, ready_c).await;
    balancer.replace(1, c.0, c.1);
    wait_for([true, true]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(connect().await.0);
    }
    ids.sort();
    assert_eq!(ids, [0, 2]);
}
