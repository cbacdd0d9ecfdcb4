//! Certificate rotation with no failed request, through the real API server (README "Certificates and
//! rotation"): a continuous stream of stage changes while the documented procedures run, with `stage-guard
//! certs` as the operator runs it, "apply" as re-registering both webhook configurations with the printed
//! caBundle, and "the pods get the Secret" as kubelet's `..data` symlink swap. The control: the old
//! procedure (a new CA whose bundle replaces the old one while the old pair is still served) fails writes,
//! so the stream does see failures when there are some.

use crate::Scenario;
use crate::harness::*;
use crate::support::checks::metric_sum;
use crate::support::fixtures::ConfigSpec;
use crate::write_stream::{Tally, Target, WriteStream, table};
use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use stage_guard_testenv::{ADMIN, ARGO_WORKFLOW};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "serving_and_ca_rotation_fail_no_write",
        run: serving_and_ca_rotation_fail_no_write,
    },
    Scenario {
        name: "replacing_the_ca_outright_fails_writes",
        run: replacing_the_ca_outright_fails_writes,
    },
];

/// Writes each phase must see: the stream flowed while the phase's state held.
const MIN_WRITES: usize = 50;
/// How long a phase may take to see them on 2 busy cores.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);
/// The documentation's wait for a pod to serve a swapped Secret: stage-guard polls its files every 2 s.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A loop, so that moves can go on for as long as the rotation takes.
fn looping_config() -> ConfigSpec {
    ConfigSpec {
        transitions: Some(vec![
            (PR_CREATED, vec![READY_FOR_QA]),
            (READY_FOR_QA, vec![PR_CREATED]),
        ]),
        ..ConfigSpec::default()
    }
}

/// The operator's side: the certificate directory and the mounted Secret the pods see.
struct Operator {
    _work: tempfile::TempDir,
    /// `--out DIR` of `stage-guard certs`.
    dir: PathBuf,
    /// The Secret volume as kubelet lays it out.
    volume: PathBuf,
    versions: usize,
}

/// What one `stage-guard certs` run printed.
struct CertsRun {
    ca_bundle: String,
    progress: String,
}

impl Operator {
    fn new() -> Result<Operator> {
        let work = tempfile::tempdir()?;
        let dir = work.path().join("certs");
        let volume = work.path().join("volume");
        std::fs::create_dir_all(&volume)?;
        Ok(Operator {
            dir,
            volume,
            versions: 0,
            _work: work,
        })
    }

    /// `stage-guard certs --service stage-guard --namespace stage-guard --san 127.0.0.1 --out DIR FLAGS`.
    fn certs(&self, flags: &[&str]) -> Result<CertsRun> {
        let out = crate::support::process::command()
            .args(["certs", "--service", "stage-guard", "--namespace"])
            .args(["stage-guard", "--san", "127.0.0.1", "--out"])
            .arg(&self.dir)
            .args(flags)
            .output()
            .context("run stage-guard certs")?;
        let progress = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(
            out.status.success(),
            "stage-guard certs {flags:?} failed: {progress}"
        );
        let ca_bundle = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let file = std::fs::read_to_string(self.dir.join("ca-bundle"))?;
        ensure!(
            file.trim() == ca_bundle,
            "DIR/ca-bundle differs from what stdout printed"
        );
        Ok(CertsRun {
            ca_bundle,
            progress,
        })
    }

    /// kubelet updates the mounted Secret: a new version directory with DIR's serving pair, then the
    /// atomic `..data` swap.
    fn pods_get_the_secret(&mut self) -> Result<()> {
        self.versions += 1;
        let version = format!("..2026_12_01_10_00_00.{}", self.versions);
        let target = self.volume.join(&version);
        std::fs::create_dir_all(&target)?;
        for file in ["tls.crt", "tls.key"] {
            std::fs::copy(self.dir.join(file), target.join(file))?;
        }
        crate::tls::swap_data_link(&self.volume, &version)?;
        for file in ["tls.crt", "tls.key"] {
            let link = self.volume.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{file}"), &link)?;
            }
        }
        Ok(())
    }

    fn tls(&self, ca_bundle: &str) -> Tls {
        Tls {
            cert_file: self.volume.join("tls.crt"),
            key_file: self.volume.join("tls.key"),
            ca_bundle: ca_bundle.to_string(),
        }
    }

    /// The serving certificate in DIR.
    fn issued(&self) -> Result<Served> {
        Served::from_pem(&std::fs::read(self.dir.join("tls.crt"))?)
    }
}

/// The facts of a serving certificate that show a rotation happened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    serial: String,
    issuer: String,
    not_after: i64,
}

impl Served {
    fn from_der(der: &[u8]) -> Result<Served> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)?;
        Ok(Served {
            serial: cert.raw_serial_as_string(),
            issuer: cert.issuer().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    fn from_pem(pem: &[u8]) -> Result<Served> {
        let der = CertificateDer::pem_slice_iter(pem)
            .next()
            .context("no certificate")??;
        Served::from_der(&der)
    }
}

/// The subjects of the CAs in a base64 caBundle (each its own issuer).
fn bundle_subjects(ca_bundle: &str) -> Result<Vec<String>> {
    let pem = base64::engine::general_purpose::STANDARD.decode(ca_bundle)?;
    CertificateDer::pem_slice_iter(&pem)
        .map(|der| Ok(Served::from_der(&der?)?.issuer))
        .collect()
}

/// The certificate stage-guard serves to a new connection, verified as the API server verifies it:
/// against `ca_bundle`, for the IP of the registered URL. (`openssl s_client` in the README.)
fn served_certificate(addr: SocketAddr, ca_bundle: &str) -> Result<Served> {
    let pem = base64::engine::general_purpose::STANDARD.decode(ca_bundle)?;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem) {
        roots.add(der?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .context("TLS handshake with stage-guard")?;
    }
    let leaf = tls
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no certificate served")?;
    Served::from_der(leaf)
}

fn reloads(t: &Install<'_>, result: &str) -> Result<f64> {
    Ok(metric_sum(
        &t.metrics()?,
        "stage_guard_tls_reloads_total",
        &[("result", result)],
    ))
}

/// What the README says to wait for after the pods get a new Secret: the reload counter goes up and the
/// expiry metric shows the new certificate's notAfter.
fn wait_for_reload(t: &Install<'_>, before: f64, expected: &Served) -> Result<()> {
    wait_until(
        RELOAD_TIMEOUT,
        "stage-guard reloads the swapped Secret",
        || {
            let metrics = t.metrics()?;
            let reloaded = metric_sum(
                &metrics,
                "stage_guard_tls_reloads_total",
                &[("result", "success")],
            ) > before;
            let not_after = metric_sum(
                &metrics,
                "stage_guard_tls_cert_not_after_timestamp_seconds",
                &[],
            );
            Ok(reloaded && not_after == expected.not_after as f64)
        },
    )
}

/// "apply": both webhook configurations with `ca_bundle`, then read back as the README's check does.
fn apply(t: &Install<'_>, ca_bundle: &str) -> Result<()> {
    t.register(ca_bundle)?;
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let config: Value =
            t.cp.kubectl(ADMIN)?
                .args(["get", kind, "stage-guard", "-o", "json"])
                .json()?;
        for hook in config["webhooks"].as_array().context("webhooks")? {
            ensure!(
                hook["clientConfig"]["caBundle"] == ca_bundle,
                "{kind} does not hold the applied caBundle"
            );
        }
    }
    Ok(())
}

/// Starts stage-guard on DIR's first pair, creates the Workflow and starts the stream.
fn start<'s>(
    suite: &'s Suite,
    scenario: &str,
    operator: &mut Operator,
) -> Result<(Install<'s>, WriteStream, CertsRun)> {
    let first = operator.certs(&[])?;
    operator.pods_get_the_secret()?;
    let t = suite.install(
        scenario,
        Setup {
            tls: Some(operator.tls(&first.ca_bundle)),
            ..Setup::config(looping_config())
        },
    )?;
    t.create_ok(ARGO_WORKFLOW, &workflow_at("looping", Some(PR_CREATED)))?;
    let stream = WriteStream::start(
        Target {
            url: t.cp.url().to_string(),
            ca_file: t.cp.ca_file(),
            token: t.cp.token(ARGO_WORKFLOW)?,
            namespace: t.ns.clone(),
            workflow: "looping".into(),
            stages: [PR_CREATED.to_string(), READY_FOR_QA.to_string()],
        },
        "before any rotation",
    )?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    Ok((t, stream, first))
}

/// Every successful write went through stage-guard: its count of admitted moves is the stream's, and the
/// stored stage is where that many moves from the first stage lead.
fn check_writes_were_judged(t: &Install<'_>, tallies: &[Tally]) -> Result<()> {
    let ok: usize = tallies.iter().map(|t| t.ok).sum();
    let admitted = metric_sum(
        &t.metrics()?,
        "stage_guard_transitions_total",
        &[("reason", "advance")],
    );
    ensure!(
        admitted == ok as f64,
        "stage-guard admitted {admitted} moves, the stream saw {ok} succeed"
    );
    let expected = if ok.is_multiple_of(2) {
        PR_CREATED
    } else {
        READY_FOR_QA
    };
    let stored = stage_of(&t.get("looping")?);
    ensure!(
        stored.as_deref() == Some(expected),
        "after {ok} moves the stage is {stored:?}, not {expected}"
    );
    Ok(())
}

fn serving_and_ca_rotation_fail_no_write(suite: &Suite) -> Result<()> {
    let mut operator = Operator::new()?;
    let (t, stream, first) = start(suite, "rotation", &mut operator)?;
    let addr = t.webhook.webhook_addr;
    let served_first = served_certificate(addr, &first.ca_bundle)?;
    ensure!(served_first == operator.issued()?);

    // (a) Serving-certificate rotation: the same command, the same apply.
    stream.phase("serving: new pair issued and applied, old pair served");
    let renewed = operator.certs(&[])?;
    ensure!(
        renewed.ca_bundle == first.ca_bundle,
        "a serving rotation changed the caBundle"
    );
    apply(&t, &renewed.ca_bundle)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    stream.phase("serving: Secret swapped, reloaded");
    let before = reloads(&t, "success")?;
    operator.pods_get_the_secret()?;
    wait_for_reload(&t, before, &operator.issued()?)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    let served_renewed = served_certificate(addr, &renewed.ca_bundle)?;
    ensure!(served_renewed == operator.issued()?);
    ensure!(
        served_renewed.serial != served_first.serial
            && served_renewed.issuer == served_first.issuer,
        "not a new pair from the same CA: {served_first:?} -> {served_renewed:?}"
    );
    stream.phase("serving: new pair served");
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;

    // (b) CA rotation, step 1: the new CA trusted beside the old one; the pods keep their pair.
    stream.phase("CA 1/3: both CAs trusted, old pair served");
    let step1 = operator.certs(&["--new-ca"])?;
    ensure!(
        step1.progress.starts_with("CA rotation, step 1 of 3"),
        "{}",
        step1.progress
    );
    let cas = bundle_subjects(&step1.ca_bundle)?;
    ensure!(
        cas.len() == 2 && cas[1] == served_first.issuer,
        "step 1's caBundle holds {cas:?}"
    );
    apply(&t, &step1.ca_bundle)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;

    // Step 2: a pair from the new CA; applied, then the pods get it.
    stream.phase("CA 2/3: new CA's pair issued and applied, old pair served");
    let step2 = operator.certs(&[])?;
    ensure!(
        step2.ca_bundle == step1.ca_bundle,
        "step 2 changed the caBundle"
    );
    ensure!(operator.issued()?.issuer == cas[0]);
    apply(&t, &step2.ca_bundle)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    stream.phase("CA 2/3: Secret swapped, reloaded");
    let before = reloads(&t, "success")?;
    operator.pods_get_the_secret()?;
    wait_for_reload(&t, before, &operator.issued()?)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    let served_new_ca = served_certificate(addr, &step2.ca_bundle)?;
    ensure!(
        served_new_ca == operator.issued()? && served_new_ca.issuer == cas[0],
        "stage-guard serves {served_new_ca:?}, not the new CA's pair"
    );
    stream.phase("CA 2/3: new CA's pair served");
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;

    // Step 3: the old CA leaves the bundle.
    stream.phase("CA 3/3: old CA dropped");
    let step3 = operator.certs(&["--drop-old-ca"])?;
    ensure!(bundle_subjects(&step3.ca_bundle)? == [cas[0].clone()]);
    apply(&t, &step3.ca_bundle)?;
    stream.wait_for_writes(MIN_WRITES, PHASE_TIMEOUT)?;
    // The API server now verifies against the new CA alone, on new connections too.
    ensure!(served_certificate(addr, &step3.ca_bundle)? == served_new_ca);

    let tallies = stream.stop();
    println!(
        "\nrotation: writes through the API server during each phase\n{}",
        table(&tallies)
    );
    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    ensure!(
        failed == 0,
        "{failed} writes failed during the rotations:\n{}",
        table(&tallies)
    );
    for tally in &tallies {
        ensure!(
            tally.ok >= MIN_WRITES,
            "phase {:?}: only {} writes",
            tally.phase,
            tally.ok
        );
    }
    ensure!(reloads(&t, "failure")? == 0.0, "a swapped pair was refused");
    check_writes_were_judged(&t, &tallies)
}

/// The control: the procedure the README documented before, a new CA each run, with the new caBundle
/// applied while the pods still serve the old pair. The same stream sees writes fail until the pods
/// get the new pair.
fn replacing_the_ca_outright_fails_writes(suite: &Suite) -> Result<()> {
    let mut operator = Operator::new()?;
    let (t, stream, _first) = start(suite, "rotation-control", &mut operator)?;

    stream.phase("old procedure: new CA applied alone, old pair served");
    // What every run of `certs` used to do: a new CA, in a directory of its own.
    let elsewhere = Operator::new()?;
    let replaced = elsewhere.certs(&[])?;
    apply(&t, &replaced.ca_bundle)?;
    // The window lasts until kubelet updates the Secret (about a minute in a cluster); here, until the
    // stream has tried this many times.
    let during = stream.wait_for_writes(MIN_WRITES * 2, PHASE_TIMEOUT)?;

    stream.phase("old procedure: Secret swapped, until and after the reload");
    std::fs::copy(elsewhere.dir.join("tls.crt"), operator.dir.join("tls.crt"))?;
    std::fs::copy(elsewhere.dir.join("tls.key"), operator.dir.join("tls.key"))?;
    let before = reloads(&t, "success")?;
    operator.pods_get_the_secret()?;
    wait_for_reload(&t, before, &operator.issued()?)?;
    stream.wait_for(MIN_WRITES, "successful writes", |t| t.ok, PHASE_TIMEOUT)?;
    let tallies = stream.stop();
    println!(
        "\nrotation control: writes through the API server during each phase\n{}",
        table(&tallies)
    );

    let Some(window) = tallies.iter().find(|t| t.phase == during.phase) else {
        bail!("no tally for {:?}", during.phase);
    };
    ensure!(
        window.failed > 0,
        "no write failed while the old pair was served under a new CA: the stream cannot see failures"
    );
    ensure!(
        window
            .failures
            .iter()
            .all(|m| m.contains("x509: certificate signed by unknown authority")),
        "unexpected failures: {:?}",
        window.failures
    );
    ensure!(
        tallies[0].failed == 0 && tallies[0].ok >= MIN_WRITES,
        "the stream failed before the old procedure: {:?}",
        tallies[0]
    );
    Ok(())
}
