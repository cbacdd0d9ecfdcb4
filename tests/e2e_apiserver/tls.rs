//! SPEC 6 through the real API server: certificate rotation by kubelet's `..data` symlink swap
//! without a restart, and mutual TLS with the client certificate the API server presents through
//! its AdmissionConfiguration kubeconfig.

use crate::Scenario;
use crate::harness::*;
use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use stage_guard_testenv::ALICE;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "certificate_rotation_by_symlink_swap_reaches_the_api_server",
        run: certificate_rotation_by_symlink_swap_reaches_the_api_server,
    },
    Scenario {
        name: "mutual_tls_through_the_admission_configuration",
        run: mutual_tls_through_the_admission_configuration,
    },
];

/// Points `root/..data` at `root/<version>` atomically, as kubelet updates a mounted Secret.
pub fn swap_data_link(root: &Path, version: &str) -> Result<()> {
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(version, &tmp)?;
    std::fs::rename(&tmp, root.join("..data"))?;
    Ok(())
}

/// A Secret volume as kubelet lays it out: `tls.crt -> ..data/tls.crt`, `..data -> <version>`.
fn secret_volume(root: &Path, version: &str) -> Result<String> {
    let bundle = issue_serving_cert(&root.join(version))?;
    swap_data_link(root, version)?;
    for file in ["tls.crt", "tls.key"] {
        if !root.join(file).exists() {
            symlink(format!("..data/{file}"), root.join(file))?;
        }
    }
    Ok(bundle)
}

/// Retries a server-side dry-run stage change until its outcome satisfies `done`: the API server
/// applies new webhook configurations asynchronously.
fn wait_for_dry_run(
    t: &Install<'_>,
    name: &str,
    done: impl Fn(&stage_guard_testenv::CliOutput) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = t
            .kubectl(ALICE)?
            .args([
                "patch",
                "workflow",
                name,
                "--dry-run=server",
                "--type",
                "merge",
                "-p",
            ])
            .arg(json!({"metadata": {"labels": {STAGE_LABEL: READY_FOR_QA}}}).to_string())
            .run()?;
        if done(&out) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("still after 30 s: {}{}", out.stdout, out.stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn certificate_rotation_by_symlink_swap_reaches_the_api_server(suite: &Suite) -> Result<()> {
    let volume = tempfile::tempdir()?;
    let root = volume.path();
    let first_bundle = secret_volume(root, "..2026_12_01_10_00_00.1")?;
    let t = suite.install(
        "rotation",
        Setup {
            tls: Some(Tls {
                cert_file: root.join("tls.crt"),
                key_file: root.join("tls.key"),
                ca_bundle: first_bundle,
            }),
            ..Setup::default()
        },
    )?;
    t.create_ok(ALICE, &workflow_at("rotated", Some(PR_CREATED)))?;

    // A new pair from a new CA. Publishing its CA first shows the API server really verifies: the
    // old certificate, still served, is refused.
    let second_bundle = issue_serving_cert(&root.join("..2026_12_01_11_00_00.2"))?;
    t.register(&second_bundle)?;
    wait_for_dry_run(&t, "rotated", |out| {
        !out.success()
            && out
                .stderr
                .contains("x509: certificate signed by unknown authority")
    })
    .context("the API server kept trusting the old certificate")?;
    // stage-guard sees the API server's refusal (Go's bad_certificate alert), counts and logs it.
    expect_refused_handshakes(&t, "server_certificate_rejected")?;

    // kubelet's swap: new connections get the new pair without a restart.
    swap_data_link(root, "..2026_12_01_11_00_00.2")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reloaded = crate::support::checks::metric_sum(
            &t.metrics()?,
            "stage_guard_tls_reloads_total",
            &[("result", "success")],
        );
        if reloaded >= 1.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no successful reload within 20 s of the swap"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_dry_run(&t, "rotated", |out| out.success())
        .context("the API server never got the new certificate")?;
    t.move_to(ALICE, "rotated", READY_FOR_QA)?.ok()?;
    ensure!(stage_of(&t.get("rotated")?).as_deref() == Some(READY_FOR_QA));
    Ok(())
}

fn mutual_tls_through_the_admission_configuration(suite: &Suite) -> Result<()> {
    let cp = suite.control_plane()?;
    let client_ca = cp.ca_file().to_string_lossy().into_owned();
    // The control plane was started with a client certificate for exactly this host:port.
    let t = suite.install(
        "mtls",
        Setup {
            listen: format!("127.0.0.1:{}", suite.mtls_port),
            args: vec!["--client-ca-file".into(), client_ca.clone()],
            ..Setup::default()
        },
    )?;
    t.create_ok(ALICE, &workflow_at("mutual", Some(PR_CREATED)))?;
    t.move_to(ALICE, "mutual", READY_FOR_QA)?.ok()?;
    ensure!(
        moves(&t.get("mutual")?)?
            == vec![
                step(None, Some(PR_CREATED), "alice"),
                step(Some(PR_CREATED), Some(READY_FOR_QA), "alice"),
            ]
    );
    drop(t);

    // On any other address the API server has no credentials to present: the handshake is
    // refused and the write fails closed.
    let t = suite.install(
        "mtls-no-client-cert",
        Setup {
            args: vec!["--client-ca-file".into(), client_ca],
            wait_until_called: false,
            ..Setup::default()
        },
    )?;
    let out = t.create(ALICE, &workflow_at("refused", Some(PR_CREATED)))?;
    let port = t.port();
    // In TLS 1.3 the client's side of the handshake is done before the server checks for a client
    // certificate, so the refusal reaches the API server as rustls's certificate_required alert, or,
    // when it is already writing the request, as a reset or a closed connection (Go's wording for
    // each of the three is below; which one depends on timing).
    let prefix = format!(
        "Error from server (InternalError): error when creating \"STDIN\": Internal error occurred: failed calling webhook \"mutate.stage-guard.io\": failed to call webhook: Post \"https://127.0.0.1:{port}/mutate?timeout=5s\": "
    );
    let reason = out.stderr.trim_end().strip_prefix(&prefix);
    let refused = reason.is_some_and(|r| {
        let transport = r
            .strip_prefix("write tcp 127.0.0.1:")
            .and_then(|rest| rest.split_once(&format!("->127.0.0.1:{port}: ")))
            .map_or(r, |(_local_port, error)| error);
        r == "remote error: tls: certificate required"
            || [
                "write: connection reset by peer",
                "write: broken pipe",
                "use of closed network connection",
            ]
            .contains(&transport)
    });
    ensure!(!out.success() && refused, "kubectl printed: {}", out.stderr);
    let requests = t.requests("mutate")? + t.requests("validate")?;
    ensure!(
        requests == 0.0,
        "{requests} requests were answered without a client certificate"
    );
    expect_refused_handshakes(&t, "no_client_certificate")?;
    Ok(())
}

/// The webhook counted refused handshakes of `reason` and logged one at warn.
fn expect_refused_handshakes(t: &Install<'_>, reason: &str) -> Result<()> {
    let counted = crate::support::checks::metric_sum(
        &t.metrics()?,
        "stage_guard_tls_handshake_failures_total",
        &[("reason", reason)],
    );
    ensure!(
        counted >= 1.0,
        "stage_guard_tls_handshake_failures_total{{reason={reason}}} = {counted}"
    );
    let field = |v: &serde_json::Value, key: &str| {
        crate::support::process::log_field(v, key)
            .and_then(|f| f.as_str())
            .map(str::to_string)
    };
    let logged = t.webhook.log_values().into_iter().any(|v| {
        v["level"] == "WARN"
            && field(&v, "message").as_deref() == Some("TLS handshake refused")
            && field(&v, "reason").as_deref() == Some(reason)
    });
    ensure!(logged, "no warn line for a refused handshake ({reason})");
    Ok(())
}
