//! SPEC 5: input that is not an AdmissionReview v1, oversized bodies, unknown paths and methods,
//! hostile label values and corrupt stored history. After every bad input the server must still
//! answer a good review.

use crate::support::apiserver::{ApiServer, Outcome, Patch};
use crate::support::checks::*;
use crate::support::client::{HttpsConn, RawRequest, RawResponse};
use crate::support::fixtures::*;
use crate::support::process::Webhook;
use crate::support::review::{
    Hook, Operation, ReviewRequest, UserInfo, build_review, options, verify_response,
};
use hyper::Method;
use serde_json::{Value, json};

fn good_review() -> (String, Vec<u8>) {
    let uid = uuid::Uuid::new_v4().to_string();
    let stored = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "ok", "namespace": NS, "resourceVersion": "7", "labels": {STAGE_LABEL: PR_CREATED}}});
    let req = ReviewRequest {
        hook: Hook::Validating,
        operation: Operation::Update,
        user: UserInfo::controller(),
        namespace: NS.into(),
        name: Some("ok".into()),
        object: with_label(&stored, "x", "y"),
        old_object: stored,
        dry_run: false,
        options: options("UpdateOptions", false),
    };
    let body = serde_json::to_vec(&build_review(&uid, &req)).unwrap();
    (uid, body)
}

/// A good review is answered on the same connection, or on a new one if the server closed it.
async fn still_serves(webhook: &Webhook, conn: &mut HttpsConn) {
    let (uid, body) = good_review();
    let request = RawRequest::review("/validate?timeout=10s", body);
    let res = match conn.send(request.clone()).await {
        Ok(res) => res,
        Err(_) => {
            *conn = webhook.connect().await;
            conn.send(request)
                .await
                .expect("a good review on a new connection")
        }
    };
    let verified = verify_response(Hook::Validating, &uid, res.status, &res.body)
        .unwrap_or_else(|e| panic!("good review after bad input: {e}"));
    assert!(verified.allowed);
}

#[track_caller]
fn assert_json_error(res: &RawResponse, status: u16, what: &str) {
    assert_eq!(res.status, status, "{what}: body {}", res.text());
    let body = res
        .json()
        .unwrap_or_else(|| panic!("{what}: error body is not JSON: {}", res.text()));
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no `error` string in {body}"));
    assert!(!error.trim().is_empty(), "{what}: empty error");
}

fn review_without(path: &str) -> Vec<u8> {
    let (_, body) = good_review();
    let mut v: Value = serde_json::from_slice(&body).unwrap();
    let (parent, key) = path.rsplit_once('/').unwrap();
    v.pointer_mut(if parent.is_empty() { "" } else { parent })
        .and_then(Value::as_object_mut)
        .unwrap()
        .remove(key);
    serde_json::to_vec(&v).unwrap()
}

fn review_with(path: &str, value: Value) -> Vec<u8> {
    let (_, body) = good_review();
    let mut v: Value = serde_json::from_slice(&body).unwrap();
    let (parent, key) = path.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap()
        .insert(key.into(), value);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn input_that_is_not_an_admission_review_v1_gets_400_with_a_json_error() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    let mut not_utf8 =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""#
            .to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    not_utf8.extend_from_slice(br#""}}"#);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json".to_vec()),
        ("empty body", Vec::new()),
        ("JSON null", b"null".to_vec()),
        ("JSON array", b"[]".to_vec()),
        ("no request", review_without("/request")),
        ("request null", review_with("/request", Value::Null)),
        ("no uid", review_without("/request/uid")),
        (
            "v1beta1",
            review_with("/apiVersion", json!("admission.k8s.io/v1beta1")),
        ),
        ("no apiVersion", review_without("/apiVersion")),
        (
            "wrong kind",
            review_with("/kind", json!("ConversionReview")),
        ),
        ("no kind", review_without("/kind")),
        ("not UTF-8", not_utf8),
    ];
    for (what, body) in cases {
        for path in ["/validate?timeout=10s", "/mutate?timeout=10s"] {
            let res = conn.send(RawRequest::review(path, body.clone())).await;
            let res = res.unwrap_or_else(|e| panic!("{what} to {path}: {e}"));
            assert_json_error(&res, 400, &format!("{what} to {path}"));
            still_serves(&webhook, &mut conn).await;
        }
    }
    assert!(
        webhook.panic_lines().is_empty(),
        "{:?}",
        webhook.panic_lines()
    );
}

/// A valid review with the string `marker` (placed at `path`) replaced by invalid UTF-8 bytes.
fn review_with_bad_utf8_at(path: &str) -> Vec<u8> {
    const MARKER: &str = "BADUTF8MARKER";
    let (_, good) = good_review();
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    // Create the parents the good review lacks (spec, status, annotations).
    let mut at = &mut v;
    let keys: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for key in &keys[..keys.len() - 1] {
        at = at
            .as_object_mut()
            .unwrap()
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    at.as_object_mut().unwrap().insert(
        keys[keys.len() - 1].to_string(),
        json!(format!("text {MARKER} text")),
    );
    let body = serde_json::to_vec(&v).unwrap();
    let at = body
        .windows(MARKER.len())
        .position(|w| w == MARKER.as_bytes())
        .unwrap();
    let mut out = body[..at].to_vec();
    // A lone continuation byte, an overlong `/`, and a truncated two-byte sequence.
    out.extend_from_slice(&[0x80, 0xc0, 0xaf, 0xc3]);
    out.extend_from_slice(&body[at + MARKER.len()..]);
    out
}

/// SPEC 5: a malformed body is a 400 wherever the fault is, including the parts of the review the
/// decoder skips without reading them (spec, status, members it does not use).
#[tokio::test]
async fn invalid_utf8_anywhere_gets_400() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    for path in [
        "/request/object/spec/note",
        "/request/oldObject/status/message",
        "/request/object/metadata/generateName",
        "/request/object/metadata/annotations/argo-note",
        "/request/object/metadata/labels/team",
        "/request/dryRunNote",
        "/request/userInfo/username",
    ] {
        let body = review_with_bad_utf8_at(path);
        assert!(std::str::from_utf8(&body).is_err(), "{path}: not broken");
        for hook in ["/validate?timeout=10s", "/mutate?timeout=10s"] {
            let res = conn.send(RawRequest::review(hook, body.clone())).await;
            let res = res.unwrap_or_else(|e| panic!("{path} to {hook}: {e}"));
            assert_json_error(&res, 400, &format!("invalid UTF-8 at {path} to {hook}"));
            still_serves(&webhook, &mut conn).await;
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let webhook = Webhook::builder()
        .arg("--max-body-bytes")
        .arg("65536")
        .start();
    let mut conn = webhook.connect().await;

    // A review just under the limit is served; one over it is refused.
    let padded = |bytes: usize| {
        let (uid, body) = good_review();
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        let pad = bytes - body.len() - 40;
        v["request"]["object"]["metadata"]["annotations"] = json!({"pad": "p".repeat(pad)});
        (uid, serde_json::to_vec(&v).unwrap())
    };
    let (uid, small) = padded(60 * 1024);
    assert!(small.len() < 65536);
    let res = conn
        .send(RawRequest::review("/validate?timeout=10s", small))
        .await
        .unwrap();
    assert!(
        verify_response(Hook::Validating, &uid, res.status, &res.body).is_ok(),
        "{}",
        res.text()
    );

    let (_, big) = padded(70 * 1024);
    assert!(big.len() > 65536);
    for path in ["/validate?timeout=10s", "/mutate?timeout=10s"] {
        // The server answers from Content-Length without reading the body, then closes; a client still
        // writing the body may see the close before the answer. Such a try says nothing either way, so
        // try again on a new connection (bounded); every answer that does arrive must be 413.
        let mut errors = Vec::new();
        let mut answered = false;
        for _ in 0..10 {
            let mut fresh = webhook.connect().await;
            match fresh.send(RawRequest::review(path, big.clone())).await {
                Ok(res) => {
                    assert_eq!(res.status, 413, "{path}: {}", res.text());
                    answered = true;
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        assert!(answered, "{path}: no answer in 10 tries: {errors:?}");
        still_serves(&webhook, &mut conn).await;
    }
}

#[tokio::test]
async fn unknown_paths_get_404_and_other_methods_405() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    let (_, body) = good_review();
    let not_found = [
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/"),
        (Method::POST, "/"),
        (Method::POST, "/validate/extra"),
        (Method::POST, "/mutating"),
        (Method::DELETE, "/nope?timeout=10s"),
        (Method::GET, "/metrics"),
    ];
    for (method, path) in not_found {
        let res = conn
            .send(RawRequest::review(path, body.clone()).with_method(method.clone()))
            .await
            .unwrap();
        assert_eq!(res.status, 404, "{method} {path}: {}", res.text());
        still_serves(&webhook, &mut conn).await;
    }
    let wrong_method = [
        (Method::GET, "/validate"),
        (Method::GET, "/mutate?timeout=10s"),
        (Method::PUT, "/validate"),
        (Method::DELETE, "/mutate"),
        (Method::PATCH, "/validate"),
    ];
    for (method, path) in wrong_method {
        let req = RawRequest::new(method.clone(), path);
        let res = conn.send(req).await.unwrap();
        assert_eq!(res.status, 405, "{method} {path}: {}", res.text());
        still_serves(&webhook, &mut conn).await;
    }
    assert!(
        webhook.panic_lines().is_empty(),
        "{:?}",
        webhook.panic_lines()
    );
}

#[tokio::test]
async fn odd_but_well_formed_reviews_never_break_the_server() {
    let mut webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("deeply nested JSON", deep.into_bytes()),
        (
            "object is a string",
            review_with("/request/object", json!("workflow")),
        ),
        (
            "labels are a list",
            review_with("/request/object/metadata/labels", json!(["a", "b"])),
        ),
        (
            "stage label is a number",
            review_with("/request/object/metadata/labels/current-stage", json!(7)),
        ),
        (
            "history annotation is a number",
            review_with(
                "/request/oldObject/metadata/annotations",
                json!({HISTORY: 5}),
            ),
        ),
        (
            "unknown operation",
            review_with("/request/operation", json!("EXPLODE")),
        ),
        ("userInfo missing", review_without("/request/userInfo")),
        ("object missing", review_without("/request/object")),
        (
            "huge uid",
            review_with("/request/uid", json!("u".repeat(100_000))),
        ),
    ];
    for (what, body) in cases {
        for path in ["/validate", "/mutate"] {
            let res = conn.send(RawRequest::review(path, body.clone())).await;
            let res = res.unwrap_or_else(|e| panic!("{what} to {path}: {e}"));
            // Either a well-formed answer or a 400 with a JSON error: never a 5xx or a dropped connection.
            match res.status {
                200 => {
                    let v = res
                        .json()
                        .unwrap_or_else(|| panic!("{what} to {path}: {}", res.text()));
                    assert_eq!(v["kind"], "AdmissionReview", "{what} to {path}");
                    assert!(v["response"]["uid"].is_string(), "{what} to {path}");
                }
                400 => assert_json_error(&res, 400, what),
                other => panic!("{what} to {path}: HTTP {other}: {}", res.text()),
            }
            still_serves(&webhook, &mut conn).await;
        }
    }
    assert!(webhook.is_running());
    assert!(
        webhook.panic_lines().is_empty(),
        "{:?}",
        webhook.panic_lines()
    );
}

#[tokio::test]
async fn a_10000_character_stage_is_denied_with_a_bounded_single_line_message() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let huge = "x".repeat(10_000);
    let stored = api
        .create(
            &UserInfo::workflow_step(),
            workflow_named("huge", Some(PR_CREATED)),
            false,
        )
        .await
        .unwrap()
        .object;
    let changed = with_stage(&stored, &huge);
    // Straight to the webhooks: a real API server would refuse the label value itself (63 chars),
    // but the webhook must not rely on that.
    for hook in [Hook::Mutating, Hook::Validating] {
        let req = ReviewRequest {
            hook,
            operation: Operation::Update,
            user: UserInfo::bob(),
            namespace: NS.into(),
            name: Some("huge".into()),
            object: changed.clone(),
            old_object: stored.clone(),
            dry_run: false,
            options: options("UpdateOptions", false),
        };
        let call = api.call(&req).await;
        for w in &call.warnings {
            assert!(!w.contains(&huge));
        }
        match (hook, &call.outcome) {
            (Hook::Mutating, Outcome::Allowed) => {}
            (Hook::Validating, Outcome::Denied { code, message, .. }) => {
                assert_eq!(*code, 403);
                assert_eq!(
                    call.audit.get("reason").map(String::as_str),
                    Some("unknown-stage")
                );
                assert_single_line(message);
                assert!(
                    message.chars().count() <= 1024,
                    "message of {} chars",
                    message.chars().count()
                );
                assert!(!message.contains(&huge), "the whole value is echoed");
                for value in call.audit.values() {
                    assert!(
                        value.chars().count() <= 1024,
                        "audit value of {} chars",
                        value.chars().count()
                    );
                }
            }
            (hook, outcome) => panic!("{hook:?}: {outcome:?}"),
        }
    }
    let mut conn = webhook.connect().await;
    still_serves(&webhook, &mut conn).await;
    api.assert_no_violations();
}

fn seeded_with_history(api: &ApiServer, name: &str, raw_history: &str) -> Value {
    let wf = with_annotation(
        &workflow_named(name, Some(PR_CREATED)),
        HISTORY,
        raw_history,
    );
    api.store().seed(wf)
}

const CORRUPT: [&str; 5] = [
    "not json {",
    r#"{"from":null,"to":"waiting-pr-created"}"#,
    r#"[{"foo":1}]"#,
    "[1,2,3]",
    r#"[{"from":null,"to":"waiting-pr-created","at":"yesterday","by":7}]"#,
];

#[tokio::test]
async fn a_corrupt_stored_history_is_replaced_on_a_stage_change() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    let step = UserInfo::workflow_step();
    for (i, raw) in CORRUPT.iter().enumerate() {
        let wf = format!("corrupt-{i}");
        seeded_with_history(&api, &wf, raw);
        let out = api
            .patch(
                &step,
                NS,
                &wf,
                Patch::Merge(stage_merge_patch(READY_FOR_QA)),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("history {raw:?}: {e:?}"));
        let h = history(&out.object);
        assert_eq!(h.len(), 1, "history {raw:?} became {h:?}");
        assert_entry(&h[0], Some(PR_CREATED), Some(READY_FOR_QA), &step.username);
        let mutating_warnings: Vec<&String> = out
            .calls_to(Hook::Mutating)
            .iter()
            .flat_map(|c| c.warnings.iter())
            .collect();
        assert!(
            !mutating_warnings.is_empty(),
            "history {raw:?}: no warning about the replaced history"
        );
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn a_corrupt_stored_history_is_left_alone_without_a_stage_change() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    for (i, raw) in CORRUPT.iter().enumerate() {
        let wf = format!("corrupt-{i}");
        let seeded = seeded_with_history(&api, &wf, raw);
        let out = api
            .patch(
                &UserInfo::controller(),
                NS,
                &wf,
                Patch::Merge(json!({"metadata": {"labels": {"team": "qa"}}})),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("history {raw:?}: {e:?}"));
        assert_eq!(history_raw(&out.object).as_deref(), Some(*raw));
        let out = api
            .update(
                &UserInfo::controller(),
                status_update(&out.object, 3),
                false,
            )
            .await
            .unwrap();
        assert_eq!(history_raw(&out.object), history_raw(&seeded));
    }
    api.assert_no_violations();
}

#[tokio::test]
async fn null_labels_and_annotations_are_handled() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    api.set_reinvocation(true);
    let step = UserInfo::workflow_step();
    let created = api
        .create(&step, workflow_named("nulls", Some(PR_CREATED)), false)
        .await
        .unwrap()
        .object;

    // `annotations: null` on a legal change: the entry still needs a parent to go into.
    let mut put = with_stage(&created, READY_FOR_QA);
    put["metadata"]["annotations"] = Value::Null;
    let out = api
        .update(&step, put, false)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let h = history(&out.object);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_entry(&h[1], Some(PR_CREATED), Some(READY_FOR_QA), &step.username);

    // `labels: null` removes the stage label.
    let mut put = out.object.clone();
    put["metadata"]["labels"] = Value::Null;
    let err = api.update(&step, put, false).await.unwrap_err();
    assert_eq!(
        err.validating_audit("reason"),
        Some("label-removed"),
        "{err:?}"
    );
    assert_eq!(err.code, 403);
    api.assert_no_violations();
}

#[tokio::test]
async fn long_names_keep_warnings_within_120_characters() {
    // Longest valid label value for the stage, a long workflow name and namespace.
    let long_stage = format!("w{}", "x".repeat(62));
    let long_name = format!("agent-pipeline-{}", "n".repeat(48));
    let long_ns = format!("team-{}", "s".repeat(58));
    let config = ConfigSpec {
        mode: "warn",
        override_users: vec!["alice"],
        ..ConfigSpec::default()
    }
    .yaml();
    let webhook = Webhook::with_config(&config);
    let api = webhook.api_server();
    let step = UserInfo::workflow_step();
    let mut wf = workflow_named(&long_name, Some(PR_CREATED));
    wf["metadata"]["namespace"] = json!(long_ns);
    api.create(&step, wf, false).await.unwrap();

    // Warned: an unknown stage; a skip; a forced change with a long reason.
    let out = api
        .patch(
            &step,
            &long_ns,
            &long_name,
            Patch::Merge(stage_merge_patch(&long_stage)),
            false,
        )
        .await
        .unwrap();
    // Shortened in the middle of the names, never at the end: what is allowed next survives.
    let warned = |warnings: &[String], ends: &str| {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("warn: team-s") && w.contains('…') && w.ends_with(ends)),
            "no warning ending with {ends:?}: {warnings:?}"
        );
    };
    warned(
        &out.warnings,
        &format!("; allowed next: \"{READY_FOR_QA}\""),
    );
    let out = api
        .patch(
            &step,
            &long_ns,
            &long_name,
            Patch::Merge(stage_merge_patch(PR_CREATED)),
            false,
        )
        .await
        .unwrap();
    warned(&out.warnings, "; allowed next: none (override only)");
    let reason = "r".repeat(300);
    let out = api
        .patch(
            &UserInfo::alice(),
            &long_ns,
            &long_name,
            Patch::Merge(override_merge_patch(PR_APPROVED, &reason)),
            false,
        )
        .await
        .unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("forced: team-s") && w.ends_with(" by alice")),
        "{:?}",
        out.warnings
    );
    for w in &out.warnings {
        assert!(
            !w.contains(&reason),
            "the whole override reason is echoed in a warning"
        );
    }
    // Every warning above went through the harness's check (single line, at most 120 characters).
    api.assert_no_violations();
}
