//! SPEC 5 and 8 at the HTTP level: the query string, keep-alive, ALPN and TLS versions as the API
//! server uses them, and the admin listener's probes, metrics and decision logs.

use crate::support::apiserver::Patch;
use crate::support::checks::*;
use crate::support::client::{RawRequest, TlsOptions};
use crate::support::fixtures::*;
use crate::support::process::Webhook;
use crate::support::review::{
    Hook, Operation, ReviewRequest, UserInfo, build_review, options, verify_response,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A review of a skip (PR created -> PR approved) for the given hook, with a fresh uid.
fn skip_review(hook: Hook) -> (String, Vec<u8>) {
    let uid = uuid::Uuid::new_v4().to_string();
    let mut stored = workflow_named("http", Some(PR_CREATED));
    stored["metadata"]["resourceVersion"] = json!("11");
    let mut h = vec![history_entry(
        None,
        Some(PR_CREATED),
        "system:serviceaccount:argo:argo-workflow",
        "2026-11-26T09:22:46Z",
    )];
    stored = with_annotation(&stored, HISTORY, &Value::Array(h.clone()).to_string());
    h.push(history_entry(
        Some(PR_CREATED),
        Some(PR_APPROVED),
        "bob",
        "2026-11-26T09:30:00Z",
    ));
    let object = with_annotation(
        &with_stage(&stored, PR_APPROVED),
        HISTORY,
        &Value::Array(h).to_string(),
    );
    let req = ReviewRequest {
        hook,
        operation: Operation::Update,
        user: UserInfo::bob(),
        namespace: NS.into(),
        name: Some("http".into()),
        object,
        old_object: stored,
        dry_run: false,
        options: options("UpdateOptions", false),
    };
    (
        uid.clone(),
        serde_json::to_vec(&build_review(&uid, &req)).unwrap(),
    )
}

#[tokio::test]
async fn the_query_string_is_ignored() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    let mut verdicts = Vec::new();
    for path in [
        "/validate?timeout=10s",
        "/validate",
        "/validate?timeout=3s&dryRun=All",
        "/validate?",
    ] {
        let (uid, body) = skip_review(Hook::Validating);
        let res = conn.send(RawRequest::review(path, body)).await.unwrap();
        let v = verify_response(Hook::Validating, &uid, res.status, &res.body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        verdicts.push((v.allowed, v.audit.get("reason").cloned()));
    }
    assert_eq!(verdicts[0], (false, Some("skip".to_string())));
    assert!(verdicts.iter().all(|v| *v == verdicts[0]), "{verdicts:?}");
    for path in ["/mutate?timeout=10s", "/mutate", "/mutate?timeout=1s"] {
        let (uid, body) = skip_review(Hook::Mutating);
        let res = conn.send(RawRequest::review(path, body)).await.unwrap();
        let v = verify_response(Hook::Mutating, &uid, res.status, &res.body)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(v.allowed, "{path}: the mutating webhook never denies");
    }
}

#[tokio::test]
async fn a_hundred_reviews_share_one_keep_alive_connection() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    for i in 0..100 {
        let hook = if i % 2 == 0 {
            Hook::Mutating
        } else {
            Hook::Validating
        };
        let (uid, body) = skip_review(hook);
        let res = conn
            .send(RawRequest::review(hook.path(), body))
            .await
            .unwrap_or_else(|e| panic!("review {i} on the shared connection: {e}"));
        verify_response(hook, &uid, res.status, &res.body)
            .unwrap_or_else(|e| panic!("review {i}: {e}"));
        assert!(
            !res.header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close")),
            "review {i}: Connection: close"
        );
    }
    assert_eq!(conn.requests_sent, 100);
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn an_idle_connection_stays_usable() {
    let webhook = Webhook::start();
    let mut conn = webhook.connect().await;
    for round in 0..2 {
        let (uid, body) = skip_review(Hook::Validating);
        let res = conn
            .send(RawRequest::review(Hook::Validating.path(), body))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        verify_response(Hook::Validating, &uid, res.status, &res.body).unwrap();
        if round == 0 {
            // Far below the API server's 90 s idle reuse, but above any short header-read timeout.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(
                !conn.is_closed(),
                "the server closed an idle keep-alive connection after 5 s"
            );
        }
    }
}

#[tokio::test]
async fn alpn_negotiates_http_1_1() {
    let webhook = Webhook::start();
    let conn = webhook.connect().await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // A client that also offers h2 still gets HTTP/1.1 (the API server never uses HTTP/2 here).
    let both = TlsOptions {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..TlsOptions::default()
    };
    let mut conn = webhook.connect_with(&both).await;
    assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (uid, body) = skip_review(Hook::Validating);
    let res = conn
        .send(RawRequest::review(Hook::Validating.path(), body))
        .await
        .unwrap();
    verify_response(Hook::Validating, &uid, res.status, &res.body).unwrap();
}

#[tokio::test]
async fn tls_1_2_only_and_tls_1_3_only_clients_both_work() {
    let webhook = Webhook::start();
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = webhook.connect_with(&TlsOptions::only(version)).await;
        assert_eq!(conn.protocol, Some(expected));
        let (uid, body) = skip_review(Hook::Validating);
        let res = conn
            .send(RawRequest::review(Hook::Validating.path(), body))
            .await
            .unwrap();
        verify_response(Hook::Validating, &uid, res.status, &res.body)
            .unwrap_or_else(|e| panic!("{expected:?}: {e}"));
    }
}

#[tokio::test]
async fn the_dev_certificate_verifies_for_the_service_names_and_loopback() {
    let webhook = Webhook::start();
    for name in [
        "stage-guard.stage-guard.svc",
        "stage-guard.stage-guard.svc.cluster.local",
        "127.0.0.1",
        "localhost",
    ] {
        let opts = TlsOptions {
            server_name: name.into(),
            ..TlsOptions::default()
        };
        let mut conn = webhook.connect_with(&opts).await;
        let (uid, body) = skip_review(Hook::Mutating);
        let res = conn
            .send(RawRequest::review(Hook::Mutating.path(), body))
            .await
            .unwrap();
        verify_response(Hook::Mutating, &uid, res.status, &res.body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let wrong = TlsOptions {
        server_name: "elsewhere.example.com".into(),
        ..TlsOptions::default()
    };
    let config = webhook.tls_options(&wrong);
    assert!(
        crate::support::client::connect(webhook.webhook_addr, config, &wrong.server_name)
            .await
            .is_err()
    );
}

// === admin listener ===

async fn wait_for_status(webhook: &Webhook, path: &str, status: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(res) = crate::support::client::http_get(webhook.admin_addr, path).await
            && res.status == status
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn probes_answer_on_the_admin_listener() {
    let webhook = Webhook::start();
    assert_eq!(webhook.admin_get("/livez").await.status, 200);
    assert!(
        wait_for_status(&webhook, "/readyz", 200, Duration::from_secs(20)).await,
        "/readyz never 200"
    );
}

const FAMILIES: [&str; 7] = [
    "stage_guard_admission_requests_total",
    "stage_guard_admission_duration_seconds",
    "stage_guard_transitions_total",
    "stage_guard_denials_total",
    "stage_guard_tls_reloads_total",
    "stage_guard_connections_closed_total",
    "stage_guard_tls_cert_not_after_timestamp_seconds",
];

#[tokio::test]
async fn metrics_export_every_family_from_start() {
    let webhook = Webhook::start();
    let res = webhook.admin_get("/metrics").await;
    assert_eq!(res.status, 200);
    let text = res.text();
    for family in FAMILIES {
        assert!(
            has_metric_family(&text, family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    let not_after = metric_sum(
        &text,
        "stage_guard_tls_cert_not_after_timestamp_seconds",
        &[],
    );
    assert!(
        not_after > crate::support::time::unix_now() as f64,
        "the serving certificate's notAfter {not_after} is not in the future"
    );
}

#[tokio::test]
async fn denials_and_transitions_are_counted() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let skips = |text: &str| metric_sum(text, "stage_guard_denials_total", &[("reason", "skip")]);
    let advances = |text: &str| {
        metric_sum(
            text,
            "stage_guard_transitions_total",
            &[
                ("from", PR_CREATED),
                ("to", READY_FOR_QA),
                ("reason", "advance"),
            ],
        )
    };
    let wf = api
        .create(
            &UserInfo::workflow_step(),
            workflow_named("counted", Some(PR_CREATED)),
            false,
        )
        .await
        .unwrap();
    let text = webhook.admin_get("/metrics").await.text();
    let (before, advanced_before) = (skips(&text), advances(&text));
    let err = api
        .patch(
            &UserInfo::bob(),
            NS,
            &name(&wf.object),
            Patch::Merge(stage_merge_patch(PR_APPROVED)),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 403);
    let after = skips(&webhook.admin_get("/metrics").await.text());
    assert_eq!(
        after,
        before + 1.0,
        "stage_guard_denials_total{{reason=\"skip\"}} went from {before} to {after}"
    );

    api.patch(
        &UserInfo::bob(),
        NS,
        &name(&wf.object),
        Patch::Merge(stage_merge_patch(READY_FOR_QA)),
        false,
    )
    .await
    .unwrap();
    let advanced = advances(&webhook.admin_get("/metrics").await.text());
    assert_eq!(
        advanced,
        advanced_before + 1.0,
        "stage_guard_transitions_total for the advance"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn stage_changes_and_denials_are_logged_at_info_and_unchanged_admissions_are_not() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let step = UserInfo::workflow_step();
    let created = api
        .create(&step, workflow_named("logged", Some(PR_CREATED)), false)
        .await
        .unwrap();
    let denied = api
        .patch(
            &UserInfo::bob(),
            NS,
            "logged",
            Patch::Merge(stage_merge_patch(PR_APPROVED)),
            false,
        )
        .await
        .unwrap_err();
    let quiet = api
        .update(
            &UserInfo::controller(),
            status_update(&created.object, 3),
            false,
        )
        .await
        .unwrap();

    let info_lines_with = |uid: &str| {
        webhook
            .log_values()
            .into_iter()
            .filter(|l| l["level"] == "INFO" && l.to_string().contains(uid))
            .collect::<Vec<_>>()
    };
    let wait = |uid: String| {
        let found = webhook.wait_for_log(Duration::from_secs(10), |l| {
            l["level"] == "INFO" && l.to_string().contains(&uid)
        });
        assert!(found.is_some(), "no INFO line for request {uid}");
    };
    let entry_uid = created.calls_to(Hook::Validating)[0].uid.clone();
    let denial_uid = denied.calls_to(Hook::Validating)[0].uid.clone();
    wait(entry_uid.clone());
    wait(denial_uid.clone());
    let lines = info_lines_with(&denial_uid);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let text = lines[0].to_string();
    for needle in [
        "logged",
        "bob",
        "UPDATE",
        "skip",
        "denied",
        PR_CREATED,
        PR_APPROVED,
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from the denial log line {text}"
        );
    }
    // The controller's status write is no stage change: nothing at info for it.
    let quiet_uid = quiet.calls_to(Hook::Validating)[0].uid.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        info_lines_with(&quiet_uid).is_empty(),
        "unchanged admission logged at info"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn metric_labels_never_carry_request_data() {
    let webhook = Webhook::start();
    let api = webhook.api_server();
    let mut wf = workflow_named("evil-name-123", Some(PR_CREATED));
    wf["metadata"]["namespace"] = json!("evil-ns-123");
    let created = api
        .create(
            &UserInfo::new("evil-user-123", &["evil-group-123"]),
            wf,
            false,
        )
        .await
        .unwrap();
    let patch = Patch::Merge(stage_merge_patch("evil-value-123"));
    let err = api
        .patch(
            &UserInfo::new("evil-user-123", &[]),
            "evil-ns-123",
            &name(&created.object),
            patch,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 403);
    let text = webhook.admin_get("/metrics").await.text();
    assert!(
        metric_sum(&text, "stage_guard_denials_total", &[]) >= 1.0,
        "the denial was counted"
    );
    for needle in [
        "evil-value-123",
        "evil-name-123",
        "evil-ns-123",
        "evil-user-123",
        "evil-group-123",
    ] {
        assert!(!text.contains(needle), "{needle} leaked into /metrics");
    }
    api.assert_no_violations();
}
