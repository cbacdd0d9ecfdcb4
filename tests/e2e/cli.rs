//! The command line through the built binary: output, messages and exit codes (SPEC 7).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

const BIN: &str = env!("CARGO_BIN_EXE_stage-guard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn check_allows_an_edge_and_an_entry() {
    let o = run(&[
        "check",
        "--from",
        "waiting-pr-created",
        "--to",
        "waiting-ready-for-qa",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains("allowed (advance)"), "{}", stdout(&o));

    let o = run(&["check", "--create", "--to", "waiting-pr-created"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("allowed (entry)"), "{}", stdout(&o));

    let o = run(&[
        "check",
        "--from",
        "waiting-ready-for-qa",
        "--to",
        "waiting-ready-for-qa",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("allowed (unchanged)"), "{}", stdout(&o));
}

#[test]
fn check_denies_with_the_reason_and_what_is_allowed_next() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--from",
                "waiting-pr-created",
                "--to",
                "waiting-pr-approved",
            ],
            r#"denied (skip): skips "waiting-ready-for-qa"; allowed next: "waiting-ready-for-qa""#,
        ),
        (
            &[
                "--from",
                "waiting-pr-approved",
                "--to",
                "waiting-pr-created",
            ],
            "denied (regression)",
        ),
        (
            &["--from", "waiting-pr-created", "--to", "nonsense"],
            "denied (unknown-stage)",
        ),
        (
            &["--from", "waiting-ready-for-qa"],
            "denied (label-removed)",
        ),
        (
            &["--create", "--to", "waiting-pr-approved"],
            "denied (skip)",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).lines().count(), 1, "{args:?}");
        assert!(stdout(&o).contains(want), "{args:?}: {}", stdout(&o));
    }
}

#[test]
fn check_override_needs_a_listed_user_or_group() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "override:\n  users: [alice]\n  groups: [sre]\n");
    let base = [
        "check",
        "--config",
        &cfg,
        "--from",
        "waiting-pr-created",
        "--to",
        "waiting-pr-approved",
        "--override-reason",
        "QA re-run",
    ];
    let mut alice = base.to_vec();
    alice.extend(["--user", "alice"]);
    let o = run(&alice);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("allowed (override)"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(
            r#"warning: forced: (offline check) "waiting-pr-created" -> "waiting-pr-approved" by alice"#
        ),
        "{}",
        stderr(&o)
    );

    let mut sre = base.to_vec();
    sre.extend(["--user", "bob", "--group", "dev", "--group", "sre"]);
    assert_eq!(run(&sre).status.code(), Some(0));

    let mut bob = base.to_vec();
    bob.extend(["--user", "bob"]);
    let o = run(&bob);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("denied (override-not-permitted)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn cluster_administrators_may_force_a_change_out_of_the_box() {
    // The embedded default and the shipped deploy/base/config.yaml: system:masters may override.
    let shipped = format!("{}/deploy/base/config.yaml", env!("CARGO_MANIFEST_DIR"));
    for config in [None, Some(shipped.as_str())] {
        let mut base = vec!["check"];
        if let Some(path) = config {
            base.extend(["--config", path]);
        }
        base.extend([
            "--from",
            "waiting-pr-approved",
            "--to",
            "waiting-pr-created",
            "--override-reason",
            "QA found a regression",
        ]);
        let mut admin = base.clone();
        admin.extend(["--user", "admin", "--group", "system:masters"]);
        let o = run(&admin);
        assert_eq!(o.status.code(), Some(0), "{config:?}: {}", stdout(&o));
        assert!(
            stdout(&o).contains("allowed (override): forced by admin"),
            "{}",
            stdout(&o)
        );

        let mut bob = base.clone();
        bob.extend(["--user", "bob", "--group", "developers"]);
        let o = run(&bob);
        assert_eq!(o.status.code(), Some(1), "{config:?}: {}", stdout(&o));
        assert!(
            stdout(&o).contains("denied (override-not-permitted): bob may not force"),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn check_in_warn_mode_prints_warned_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "mode: warn\n");
    let o = run(&[
        "check",
        "--config",
        &cfg,
        "--from",
        "waiting-pr-created",
        "--to",
        "waiting-pr-approved",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("warned (skip)"), "{}", stdout(&o));
}

#[test]
fn check_usage_and_config_errors_exit_2() {
    let o = run(&[
        "check",
        "--create",
        "--from",
        "waiting-pr-created",
        "--to",
        "waiting-ready-for-qa",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--from must be omitted"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "stages: [a, b, a]\n");
    let o = run(&["check", "--config", &cfg, "--to", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("stages[2]: duplicate stage"),
        "{}",
        stderr(&o)
    );

    assert_eq!(run(&["check", "--no-such-flag"]).status.code(), Some(2));
}

#[test]
fn config_check_names_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_file(
        &dir,
        "stages: [a, b, c]\ntransitions:\n  a: [b]\n  b: [c, a]\n",
    );
    let o = run(&["config", "check", &good]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok (3 stages, 3 edges"),
        "{}",
        stdout(&o)
    );

    let cases = [
        (
            "stages: [a, b]\ntransitions:\n  a: [c]\n",
            "transitions.a[0]: unknown stage \"c\"",
        ),
        (
            "stages: [a]\nhistory:\n  annotaton: x\n",
            ":3:3: unknown key \"history.annotaton\"; did you mean \"history.annotation\"?",
        ),
        (
            "stages: [a]\ntrasitions: {}\n",
            ":2:1: unknown key \"trasitions\"; did you mean \"transitions\"?",
        ),
        (
            "stages: [a, b]\ntransitions:\n  a: [bb]\n",
            ":3:7: transitions.a[0]: unknown stage \"bb\"; did you mean \"b\"?",
        ),
        ("stages: [a\nmode: warn\n", ":2:5: "),
        (
            "# only a comment\n",
            ": the file is empty; run 'stage-guard config default' for a starting point",
        ),
        ("stages: [a]\nmode: strict\n", "strict"),
        (
            "stages: [a]\nentry: []\n",
            "entry: must name at least one stage",
        ),
    ];
    for (yaml, want) in cases {
        let bad = config_file(&dir, yaml);
        let o = run(&["config", "check", &bad]);
        assert_eq!(o.status.code(), Some(2), "{yaml}");
        // One line: the file's name (and position), the key, the problem.
        assert_eq!(stderr(&o).lines().count(), 1, "{yaml}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with(&format!("stage-guard: {bad}")),
            "{yaml}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(want), "{yaml}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    }
    let o = run(&["config", "check", "/no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read /no/such/file.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_default_prints_a_configuration_that_checks() {
    let o = run(&["config", "default"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains("label: current-stage"));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(&dir, &text);
    let o = run(&["config", "check", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let checked = stdout(&o);
    assert!(
        checked.starts_with(&format!(
            "# {path}: ok (3 stages, 2 edges, entry: waiting-pr-created, mode: enforce)\n"
        )),
        "{checked}"
    );
    // The rest is the effective configuration in the file's own spelling: a file that checks
    // again, to the same output.
    for line in [
        "mode: enforce",
        "resubmit: reset",
        "groups: [system:masters]",
    ] {
        assert!(
            checked.lines().any(|l| l.trim() == line),
            "{line}: {checked}"
        );
    }
    let again = config_file(&dir, &checked);
    let o = run(&["config", "check", &again]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().skip(1).collect::<Vec<_>>(),
        checked.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn one_stage_and_one_edge_are_counted_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    let one = config_file(&dir, "stages: [only]\n");
    let o = run(&["config", "check", &one]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok (1 stage, 0 edges"),
        "{}",
        stdout(&o)
    );
    let two = config_file(&dir, "stages: [a, b]\nmode: warn\n");
    let o = run(&["config", "check", &two]);
    assert!(
        stdout(&o).contains("ok (2 stages, 1 edge, entry: a, mode: warn)"),
        "{}",
        stdout(&o)
    );
}

fn samples(name: &str) -> String {
    format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn review_answers_like_the_server() {
    let o = run(&["review", &samples("validate-skip.json")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "5e2d8c1a-7b3f-4a6e-8d9c-0f1e2a3b4c5d");
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["code"], 403);

    let o = run(&["review", "--mutate", &samples("mutate-advance.json")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        ops[0]["path"],
        "/metadata/annotations/stage-guard.io~1history"
    );
}

#[test]
fn review_reads_stdin_and_refuses_unreadable_input_with_2() {
    let body = std::fs::read(samples("validate-skip.json")).unwrap();
    let mut child = Command::new(BIN)
        .args(["review", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("\"allowed\":false"));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"apiVersion\":\"admission.k8s.io/v1beta1\"}").unwrap();
    let o = run(&["review", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("apiVersion must be admission.k8s.io/v1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        run(&["review", "/no/such/review.json"]).status.code(),
        Some(2)
    );
}

#[test]
fn certs_writes_the_files_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "certs",
        "--service",
        "stage-guard",
        "--namespace",
        "stage-guard",
        "--out",
        out.to_str().unwrap(),
        "--san",
        "10.0.0.7",
        "--san",
        "webhook.example.test",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(stdout(&o).trim())
        .expect("stdout is the base64 caBundle");
    assert_eq!(bundle, std::fs::read(out.join("ca.crt")).unwrap());
    assert_eq!(
        std::fs::read_to_string(out.join("ca-bundle")).unwrap(),
        stdout(&o),
        "ca-bundle holds what stdout printed"
    );
    let err = stderr(&o);
    for san in [
        "stage-guard.stage-guard.svc",
        "stage-guard.stage-guard.svc.cluster.local",
        "10.0.0.7",
    ] {
        assert!(err.contains(san), "{san} not listed: {err}");
    }
}

/// `stage-guard certs` for the Service stage-guard/stage-guard into `dir`, with `extra` flags.
fn certs(dir: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "certs",
        "--service",
        "stage-guard",
        "--namespace",
        "stage-guard",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The subjects of the certificates in a base64 caBundle, in order.
fn bundle_subjects(o: &Output) -> Vec<String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(stdout(o).trim())
        .expect("stdout is a base64 caBundle");
    x509_parser::pem::Pem::iter_from_buffer(&pem)
        .map(|p| {
            let p = p.unwrap();
            p.parse_x509().unwrap().subject().to_string()
        })
        .collect()
}

fn subject_of(path: &std::path::Path) -> (String, String) {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    (cert.subject().to_string(), cert.issuer().to_string())
}

#[test]
fn certs_reuses_its_ca_and_rotates_it_in_three_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let first = certs(&dir, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let (ca, _) = subject_of(&dir.join("ca.crt"));

    // Serving rotation: the same command, the same CA and caBundle, a new pair.
    let old_pair = std::fs::read(dir.join("tls.crt")).unwrap();
    let again = certs(&dir, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&first), "the caBundle changed");
    assert_ne!(std::fs::read(dir.join("tls.crt")).unwrap(), old_pair);
    assert_eq!(subject_of(&dir.join("tls.crt")).1, ca);
    assert!(
        stderr(&again).contains("the caBundle is unchanged"),
        "{}",
        stderr(&again)
    );

    // CA rotation, step 1: both CAs trusted, the serving pair untouched.
    let pair = std::fs::read(dir.join("tls.crt")).unwrap();
    let step1 = certs(&dir, &["--new-ca"]);
    assert_eq!(step1.status.code(), Some(0), "{}", stderr(&step1));
    let (new_ca, _) = subject_of(&dir.join("ca.crt"));
    assert_ne!(new_ca, ca);
    assert_eq!(bundle_subjects(&step1), [new_ca.clone(), ca.clone()]);
    assert_eq!(std::fs::read(dir.join("tls.crt")).unwrap(), pair);
    assert!(
        stderr(&step1).starts_with("CA rotation, step 1 of 3"),
        "{}",
        stderr(&step1)
    );

    // Step 2: the pair from the new CA, both still trusted.
    let step2 = certs(&dir, &[]);
    assert_eq!(step2.status.code(), Some(0), "{}", stderr(&step2));
    assert_eq!(stdout(&step2), stdout(&step1));
    assert_eq!(subject_of(&dir.join("tls.crt")).1, new_ca);
    assert!(
        stderr(&step2).starts_with("CA rotation, step 2 of 3"),
        "{}",
        stderr(&step2)
    );
    assert!(
        stderr(&step2).contains("--drop-old-ca"),
        "{}",
        stderr(&step2)
    );

    // Step 3: the new CA alone.
    let step3 = certs(&dir, &["--drop-old-ca"]);
    assert_eq!(step3.status.code(), Some(0), "{}", stderr(&step3));
    assert_eq!(bundle_subjects(&step3), [new_ca]);
    assert!(!dir.join("ca-previous.crt").exists());
    assert!(
        stderr(&step3).starts_with("CA rotation, step 3 of 3"),
        "{}",
        stderr(&step3)
    );
}

/// Expects exit code 2, nothing on stdout and one line on stderr containing `want`.
fn assert_refused(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert_eq!(stdout(o), "", "a refusal printed a caBundle");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("stage-guard: "), "{err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

#[test]
fn certs_refuses_a_step_that_would_break_requests_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    assert_refused(&certs(&dir, &["--new-ca"]), "no CA to replace");
    assert_eq!(certs(&dir, &[]).status.code(), Some(0));
    assert_refused(
        &certs(&dir, &["--drop-old-ca"]),
        "no CA rotation in progress",
    );
    assert_eq!(certs(&dir, &["--new-ca"]).status.code(), Some(0));
    let bundle = std::fs::read(dir.join("ca-bundle")).unwrap();
    assert_refused(
        &certs(&dir, &["--drop-old-ca"]),
        "would break every request",
    );
    assert_refused(&certs(&dir, &["--new-ca"]), "a CA rotation is in progress");
    assert_eq!(
        std::fs::read(dir.join("ca-bundle")).unwrap(),
        bundle,
        "a refusal touched the caBundle"
    );
    let o = run(&[
        "certs",
        "--service",
        "s",
        "--namespace",
        "n",
        "--out",
        dir.to_str().unwrap(),
        "--new-ca",
        "--drop-old-ca",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn certs_never_replaces_a_ca_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(certs(&a, &[]).status.code(), Some(0));
    assert_eq!(certs(&b, &[]).status.code(), Some(0));
    let ca = std::fs::read(a.join("ca.crt")).unwrap();

    std::fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
    assert_refused(&certs(&a, &[]), "does not match the certificate");
    std::fs::write(a.join("ca.crt"), "not a certificate\n").unwrap();
    assert_refused(&certs(&a, &[]), "no certificate in PEM");
    std::fs::remove_file(a.join("ca.key")).unwrap();
    std::fs::write(a.join("ca.crt"), &ca).unwrap();
    assert_refused(&certs(&a, &[]), "ca.key is missing");
    assert_eq!(
        std::fs::read(a.join("ca.crt")).unwrap(),
        ca,
        "the CA was replaced"
    );
}

#[test]
fn certs_reports_a_directory_it_cannot_write_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let o = certs(&blocker.join("certs"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("creating directory"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn help_explains_every_command() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["review", "--help"],
        &["config", "--help"],
        &["config", "check", "--help"],
        &["certs", "--help"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
    let serve = stdout(&run(&["serve", "--help"]));
    for flag in [
        "--config",
        "--listen",
        "--admin-listen",
        "--tls-cert-file",
        "--tls-key-file",
        "--client-ca-file",
        "--dev-cert-dir",
        "--max-body-bytes",
        "--shutdown-delay",
        "--shutdown-grace",
        "--max-connections",
        "--header-timeout",
        "STAGE_GUARD_HEADER_TIMEOUT",
        "--log-format",
        "--log-level",
        "STAGE_GUARD_TLS_CERT_FILE",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    let certs = stdout(&run(&["certs", "--help"]));
    for text in [
        "--new-ca",
        "--drop-old-ca",
        "STAGE_GUARD_NEW_CA",
        "ca-previous.crt",
        "Examples",
    ] {
        assert!(certs.contains(text), "certs --help lacks {text}");
    }
}

/// Runs `serve` expecting it to stop on its own, bounded in time.
fn serve_expecting_exit(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve {args:?} kept running; it should have refused to start");
}

#[test]
fn serve_refuses_a_bad_config_or_missing_certificates_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "stages: [a]\ntransitions:\n  a: [zz]\n");
    let o = serve_expecting_exit(&["--config", &cfg]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("transitions.a[0]: unknown stage \"zz\""),
        "{}",
        stderr(&o)
    );

    let o = serve_expecting_exit(&[
        "--tls-cert-file",
        "/no/tls.crt",
        "--tls-key-file",
        "/no/tls.key",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/tls.crt"), "{}", stderr(&o));

    let o = serve_expecting_exit(&["--tls-cert-file", "/no/tls.crt"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let o = serve_expecting_exit(&["--log-format", "yaml"]);
    assert_eq!(o.status.code(), Some(2));

    // A header deadline of zero would close every connection before its first request.
    let o = serve_expecting_exit(&["--header-timeout", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim_end(),
        "stage-guard: --header-timeout must be more than 0 seconds"
    );

    // An empty file is not the default pipeline.
    let empty = config_file(&dir, "\n# to be filled in\n");
    let o = serve_expecting_exit(&["--config", &empty]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "stage-guard: {empty}: the file is empty; run 'stage-guard config default' for a starting point"
        )
    );
}

#[test]
fn serve_refuses_an_unknown_log_level_in_one_line_with_exit_2() {
    for (level, problem) in [
        (
            "warning",
            r#""warning" is not a level (did you mean warn?)"#,
        ),
        ("stage_guard=loud", r#""loud" is not a level"#),
        ("stage guard=debug", r#""stage guard" is not a log target"#),
    ] {
        let o = serve_expecting_exit(&["--log-level", level]);
        assert_eq!(o.status.code(), Some(2), "{level}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{level}: {err}");
        assert!(err.contains(problem), "{level}: {err}");
        assert!(
            err.contains("error|warn|info|debug|trace") && err.contains("stage_guard=debug"),
            "{err}"
        );
    }
    // The environment twin is checked the same way.
    let o = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("STAGE_GUARD_LOG_LEVEL", "verbose")
        .output()
        .expect("the binary runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(r#""verbose" is not a level"#),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_refuses_a_listen_address_it_cannot_use_in_one_line_with_exit_2() {
    for (flag, value, problem) in [
        (
            "--listen",
            "no-such-host.invalid:8443",
            "stage-guard: --listen no-such-host.invalid:8443: the name ",
        ),
        (
            "--admin-listen",
            "no-such-host.invalid:8080",
            "stage-guard: --admin-listen no-such-host.invalid:8080: the name ",
        ),
        (
            "--listen",
            "8443",
            "stage-guard: --listen \"8443\" is not HOST:PORT (no port)",
        ),
        (
            "--admin-listen",
            "::1:8080",
            "stage-guard: --admin-listen \"::1:8080\" is not HOST:PORT (an IPv6 address goes in brackets",
        ),
    ] {
        let (listen, admin) = if flag == "--listen" {
            (value, "127.0.0.1:0")
        } else {
            ("127.0.0.1:0", value)
        };
        let certs = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen, "--admin-listen", admin])
            .arg("--dev-cert-dir")
            .arg(certs.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve {flag} {value} kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        // The error is one line, the last; log lines of the start before it are no errors.
        let err = stderr(&o);
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("stage-guard:") || l.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].starts_with(problem), "{err}");
        assert_eq!(err.lines().last(), Some(errors[0]), "{err}");
    }
}

#[test]
fn serve_takes_a_level_or_directives() {
    // `listening` is an info line of the stage_guard target: it shows through both filters.
    for level in ["info", "stage_guard=debug,warn"] {
        let webhook = crate::support::process::Webhook::builder()
            .args(&["--log-level", level])
            .start();
        assert!(webhook.webhook_addr.port() > 0, "{level}");
    }
}

#[test]
fn offline_answers_are_the_clusters_in_warn_mode_too() {
    // The API server calls the mutating webhook, applies its patch, then calls the validating one;
    // in warn mode it admits the sample skip with a warning, and so must `review` and `check`.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "mode: warn\n");
    let o = run(&[
        "review",
        "--config",
        &config,
        &samples("validate-skip.json"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["auditAnnotations"]["decision"], "warned");
    assert_eq!(v["response"]["auditAnnotations"]["reason"], "skip");
    // The workflow, the change and what is allowed next, in the 120 characters of SPEC 4.7.
    assert_eq!(
        v["response"]["warnings"][0],
        r#"warn: argo/play-task-7 "waiting-pr-created" -> "waiting-pr-approved" skips 1 stage; allowed next: "waiting-ready-for-qa""#,
        "{v}"
    );

    let o = run(&[
        "check",
        "--config",
        &config,
        "--from",
        "waiting-pr-created",
        "--to",
        "waiting-pr-approved",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("warned (skip)"), "{}", stdout(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        r#"warning: warn: (offline check) "waiting-pr-created" -> "waiting-pr-approved" skips 1 stage; allowed next: "waiting-ready-for-qa""#,
    );
}

/// A Workflow as `kubectl get -o yaml` prints it, at `stage`, with a one-entry history.
fn stored_workflow_yaml(stage: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: task-7
  namespace: argo
  resourceVersion: "4711"
  labels:
    current-stage: {stage}
    workflows.argoproj.io/phase: Running
  annotations:
    stage-guard.io/history: '[{{"from":null,"to":"waiting-pr-created","at":"2026-11-26T09:22:46Z","by":"alice"}}]'
spec:
  entrypoint: main
status:
  phase: Running
"#
    )
}

#[test]
fn review_judges_the_stored_and_the_incoming_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let old = write("old.yaml", &stored_workflow_yaml("waiting-pr-created"));
    let skip = write("skip.yaml", &stored_workflow_yaml("waiting-pr-approved"));
    let advance = write(
        "advance.yaml",
        &stored_workflow_yaml("waiting-ready-for-qa"),
    );

    let o = run(&["review", "--old", &old, "--new", &skip, "--user", "bob"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["response"]["status"]["message"],
        r#"stage change "waiting-pr-created" -> "waiting-pr-approved" on argo/task-7 denied (skip): skips "waiting-ready-for-qa"; allowed next: "waiting-ready-for-qa""#
    );

    let o = run(&["review", "--old", &old, "--new", &advance, "--user", "bob"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["response"]["auditAnnotations"]["reason"], "advance");

    // The mutating webhook's answer to the same write: the history entry, stamped for bob.
    let o = run(&[
        "review", "--mutate", "--old", &old, "--new", &advance, "--user", "bob",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(v["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let history: serde_json::Value =
        serde_json::from_str(ops[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(history[1]["from"], "waiting-pr-created");
    assert_eq!(history[1]["to"], "waiting-ready-for-qa");
    assert_eq!(history[1]["by"], "bob");

    // Without --old it is a CREATE: entering at the entry stage is allowed, past it is a skip.
    let entry = write("entry.yaml", &stored_workflow_yaml("waiting-pr-created"));
    let o = run(&["review", "--new", &entry, "--user", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("\"reason\":\"entry\""),
        "{}",
        stdout(&o)
    );
    assert_eq!(run(&["review", "--new", &skip]).status.code(), Some(1));

    // Input that cannot be judged is exit 2 with a one-line reason.
    let o = run(&["review", "--new", &advance, "--operation", "UPDATE"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("give --old FILE"), "{}", stderr(&o));
    let list = write("list.yaml", "- not\n- an object\n");
    let o = run(&["review", "--new", &list]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a YAML or JSON object"),
        "{}",
        stderr(&o)
    );
}

const TWO_PIPELINES: &str = "stages: [a, b, c]\npipelines:\n  - name: qa\n    match: {labels: {tmpl: qa}}\n    stages: [dev, test, done]\n    transitions: {dev: [test], test: [done, dev]}\n    mode: warn\n";

#[test]
fn graph_draws_every_pipeline_or_the_one_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, TWO_PIPELINES);
    let o = run(&["graph", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("pipeline qa (mode warn)\n  entry: dev\n"),
        "{text}"
    );
    assert!(text.contains("  test -> dev   (loop)\n"), "{text}");
    assert!(text.contains("pipeline default (mode enforce)"), "{text}");

    let o = run(&[
        "graph",
        "--config",
        &config,
        "--pipeline",
        "qa",
        "--format",
        "mermaid",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = stdout(&o);
    assert!(
        m.starts_with("flowchart LR\n  subgraph p0[\"qa (warn)\"]"),
        "{m}"
    );
    assert!(!m.contains("default"), "{m}");

    let o = run(&["graph", "--config", &config, "--format", "dot"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("digraph stages {"));

    let o = run(&["graph", "--config", &config, "--pipeline", "docs"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "stage-guard: no pipeline \"docs\" (the configuration has: qa, default)"
    );
    let o = run(&["graph", "--format", "svg"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn config_check_summarises_pipelines_and_prints_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            "{TWO_PIPELINES}  - name: docs\n    match: {{namespaces: [docs]}}\n    stages: [draft, orphan]\n    transitions: {{}}\n"
        ),
    );
    let o = run(&["config", "check", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines().next().unwrap().contains(
            "ok (3 pipelines; qa: 3 stages, 3 edges, entry: dev, mode: warn; docs: 2 stages, 0 edges, entry: draft, mode: enforce; default:"
        ),
        "{out}"
    );
    assert!(
        out.contains("# warning: pipelines[1] (\"docs\"): stage \"orphan\" cannot be reached"),
        "{out}"
    );
    assert!(stderr(&o).contains("warning: "), "{}", stderr(&o));
    // The output is itself a configuration that checks to the same thing.
    let again = config_file(&dir, &out);
    let o2 = run(&["config", "check", &again]);
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
}

/// The suites shipped beside the manifests pass against the configurations they name.
#[test]
fn the_shipped_test_suites_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/tests");
    let o = run(&["test", dir]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let summary = out.lines().last().unwrap();
    assert!(
        summary.ends_with("in 2 files: 24 passed, 0 failed"),
        "{summary}"
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS  ")).count(), 24);
}

#[test]
fn test_reports_each_case_and_exits_1_on_a_failure_and_2_on_a_malformed_suite() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, TWO_PIPELINES);
    let suite = dir.path().join("cases.yaml");
    std::fs::write(
        &suite,
        "cases:\n  - {name: qa loop, labels: {tmpl: qa}, from: test, to: dev, expect: allowed, reason: advance}\n  \
         - {name: wrong on purpose, from: a, to: c, expect: allowed}\n",
    )
    .unwrap();
    let o = run(&["test", "--config", &config, &suite.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("PASS  "), "{out}");
    assert!(
        out.contains(
            ": wrong on purpose: expected allowed, got denied (skip): stage change \"a\" -> \"c\""
        ),
        "{out}"
    );
    assert!(
        out.ends_with("2 cases in 1 file: 1 passed, 1 failed\n"),
        "{out}"
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "cases:\n  - {name: x, to: a, expect: allowed, colour: red}\n",
    )
    .unwrap();
    let o = run(&["test", &broken.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.starts_with("stage-guard: ") && e.contains("broken.yaml:2:"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    let o = run(&["test", "/nonexistent/suite.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no such file or folder"),
        "{}",
        stderr(&o)
    );
}
