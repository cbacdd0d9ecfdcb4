//! The binary in production conditions (SPEC 6, 9): certificate rotation through a kubelet-style
//! symlink swap, mutual TLS, and the drain-then-stop shutdown on SIGTERM. Loopback only, bounded waits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::process::{Webhook, log_field};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use stage_guard::certs::{CertBundle, generate_bundle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bundle() -> CertBundle {
    generate_bundle(&["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("certificates")
}

/// A client trusting the given CA PEMs, optionally presenting a client certificate. Session
/// resumption is off so every connection shows the certificate served now.
pub(crate) fn client(cas: &[&str], identity: Option<(&str, &str)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in cas {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

pub(crate) async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The serving certificate's DER as the client saw it.
fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

pub(crate) fn review_body(uid: &str) -> Vec<u8> {
    let wf = |stage: &str| {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "wf", "namespace": "argo", "resourceVersion": "3",
                            "labels": {"current-stage": stage}}})
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "UPDATE", "namespace": "argo", "name": "wf",
                    "userInfo": {"username": "system:serviceaccount:argo:argo-workflow"},
                    "object": wf("waiting-ready-for-qa"), "oldObject": wf("waiting-ready-for-qa"),
                    "dryRun": false}
    }))
    .unwrap()
}

/// Writes one HTTP/1.1 request head (keep-alive) announcing `len` body bytes.
pub(crate) async fn write_head(
    stream: &mut TlsStream<TcpStream>,
    len: usize,
) -> std::io::Result<()> {
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         User-Agent: kube-apiserver-admission\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}

/// One HTTP/1.1 response as read off the wire.
pub(crate) struct Answer {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of a header (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The admission response's uid.
    pub fn uid(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        v["response"]["uid"].as_str().unwrap_or_default().to_owned()
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns status and body.
async fn read_response(stream: &mut TlsStream<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    read_answer(stream).await.map(|a| (a.status, a.body))
}

/// Reads one HTTP/1.1 response with a Content-Length body.
pub(crate) async fn read_answer(stream: &mut TlsStream<TcpStream>) -> std::io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(Answer {
                    status,
                    head,
                    body: buf[end + 4..end + 4 + len].to_vec(),
                });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("response timed out"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One review over an open connection; returns the echoed uid.
pub(crate) async fn review(
    stream: &mut TlsStream<TcpStream>,
    uid: &str,
) -> std::io::Result<String> {
    let body = review_body(uid);
    write_head(stream, body.len()).await?;
    stream.write_all(&body).await?;
    let (status, body) = read_response(stream).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    Ok(v["response"]["uid"].as_str().unwrap_or_default().to_owned())
}

pub(crate) async fn metric(webhook: &Webhook, series: &str) -> Option<f64> {
    let text = webhook.admin_get("/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Writes a certificate pair as kubelet lays out a mounted Secret and swaps `..data` atomically.
struct SecretVolume {
    dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &str, key: &str) -> SecretVolume {
        let mut v = SecretVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        v.swap_to(cert, key);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    fn swap_to(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..2026_11_26_v{}", self.version);
        let version_dir = self.dir.join(&name);
        std::fs::create_dir(&version_dir).unwrap();
        std::fs::write(version_dir.join("tls.crt"), cert).unwrap();
        std::fs::write(version_dir.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> String {
        self.dir.join("tls.crt").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("tls.key").display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_a_symlink_swap_keeps_open_connections_and_refuses_a_broken_pair() {
    let (a, b, c) = (bundle(), bundle(), bundle());
    let dir = tempfile::tempdir().unwrap();
    let mut volume = SecretVolume::new(dir.path(), &a.cert_pem, &a.key_pem);
    let webhook = Webhook::builder()
        .args(&[
            "--tls-cert-file",
            &volume.cert(),
            "--tls-key-file",
            &volume.key(),
        ])
        .start();
    let trust = client(&[&a.ca_cert_pem, &b.ca_cert_pem, &c.ca_cert_pem], None);

    let mut open = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(peer_leaf(&open), leaf_der(&a.cert_pem));
    assert_eq!(
        review(&mut open, "before-swap").await.unwrap(),
        "before-swap"
    );

    volume.swap_to(&b.cert_pem, &b.key_pem);
    let swapped = Instant::now();
    let deadline = swapped + Duration::from_secs(10);
    loop {
        let s = tls_connect(webhook.webhook_addr, trust.clone())
            .await
            .unwrap();
        if peer_leaf(&s) == leaf_der(&b.cert_pem) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still get the old certificate after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The keep-alive connection opened before the swap still works.
    assert_eq!(review(&mut open, "after-swap").await.unwrap(), "after-swap");
    assert_eq!(
        metric(
            &webhook,
            "stage_guard_tls_reloads_total{result=\"success\"}"
        )
        .await,
        Some(1.0)
    );

    // A broken pair (certificate of one bundle, key of another) is refused; the last good pair stays.
    volume.swap_to(&c.cert_pem, &a.key_pem);
    let deadline = Instant::now() + WAIT;
    while metric(
        &webhook,
        "stage_guard_tls_reloads_total{result=\"failure\"}",
    )
    .await
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the broken pair was never reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(
        peer_leaf(&s),
        leaf_der(&b.cert_pem),
        "the last good certificate stays in use"
    );
    assert!(
        webhook
            .wait_for_log(WAIT, |v| v["level"] == "ERROR"
                && v.to_string().contains("tls.key"))
            .is_some(),
        "an error log names the refused file"
    );
    assert_eq!(review(&mut open, "still-open").await.unwrap(), "still-open");
}

/// A CA and a client certificate (clientAuth) it signed.
fn client_identity() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let (client_ca, client_cert, client_key) = client_identity();
    let (_other_ca, other_cert, other_key) = client_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, &client_ca).unwrap();
    let webhook = Webhook::builder()
        .args(&["--client-ca-file", ca_path.to_str().unwrap()])
        .start();
    let server_ca = std::fs::read_to_string(webhook.ca_file()).unwrap();

    // With a certificate from the client CA: served.
    let mut ok = tls_connect(
        webhook.webhook_addr,
        client(&[&server_ca], Some((&client_cert, &client_key))),
    )
    .await
    .unwrap();
    assert_eq!(review(&mut ok, "with-cert").await.unwrap(), "with-cert");

    // Without one, or with one from another CA: no review gets through. Under TLS 1.3 the server's
    // refusal can arrive after the client's handshake completes, so try a review too.
    for identity in [None, Some((other_cert.as_str(), other_key.as_str()))] {
        let refused = match tls_connect(webhook.webhook_addr, client(&[&server_ca], identity)).await
        {
            Err(_) => true,
            Ok(mut s) => review(&mut s, "no-cert").await.is_err(),
        };
        assert!(refused, "a client with {identity:?} was served");
    }
    // Probes stay on the plain admin listener.
    assert_eq!(webhook.admin_get("/readyz").await.status, 200);
}

/// The webhook listener's `stage_guard_tls_handshake_failures_total` for one reason.
async fn refusals(webhook: &Webhook, reason: &str) -> f64 {
    let series = format!("stage_guard_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    metric(webhook, &series).await.unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_counted_by_reason_and_logged_at_warn_once_per_window() {
    let (client_ca, client_cert, client_key) = client_identity();
    let (_other_ca, other_cert, other_key) = client_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, &client_ca).unwrap();
    let webhook = Webhook::builder()
        .args(&["--client-ca-file", ca_path.to_str().unwrap()])
        .start();
    let server_ca = std::fs::read_to_string(webhook.ca_file()).unwrap();
    // Exported from start-up, at zero.
    for reason in [
        "timeout",
        "not_tls",
        "protocol",
        "no_client_certificate",
        "bad_client_certificate",
        "server_certificate_rejected",
        "closed",
        "other",
    ] {
        assert_eq!(refusals(&webhook, reason).await, 0.0, "{reason}");
    }

    // Plain HTTP on the TLS port, three times: the server closes each connection.
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(webhook.webhook_addr).await.unwrap();
        tcp.write_all(b"GET /validate HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut sink)).await;
    }
    // A client that does not trust the serving certificate (the caBundle of another CA).
    let stranger = bundle();
    let result = tls_connect(
        webhook.webhook_addr,
        client(&[&stranger.ca_cert_pem], Some((&client_cert, &client_key))),
    )
    .await;
    assert!(
        result.is_err(),
        "a client that distrusts the server went through"
    );
    // No client certificate, and one from another CA: under TLS 1.3 the refusal reaches the client
    // after its side of the handshake, so send a review to see it.
    for identity in [None, Some((other_cert.as_str(), other_key.as_str()))] {
        if let Ok(mut s) = tls_connect(webhook.webhook_addr, client(&[&server_ca], identity)).await
        {
            assert!(review(&mut s, "refused").await.is_err(), "{identity:?}");
        }
    }
    // Only HTTP/2 offered: no common application protocol.
    let mut h2_only = (*client(&[&server_ca], Some((&client_cert, &client_key)))).clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        tls_connect(webhook.webhook_addr, Arc::new(h2_only))
            .await
            .is_err()
    );
    // Connected, then gone before saying anything.
    drop(TcpStream::connect(webhook.webhook_addr).await.unwrap());

    let want = [
        ("not_tls", 3.0),
        ("server_certificate_rejected", 1.0),
        ("no_client_certificate", 1.0),
        ("bad_client_certificate", 1.0),
        ("protocol", 1.0),
        ("closed", 1.0),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let mut got = Vec::new();
        for (reason, _) in want {
            got.push((reason, refusals(&webhook, reason).await));
        }
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals counted: {got:?}, want {want:?}\n{}",
            webhook.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refusals(&webhook, "other").await, 0.0);

    // Logged at warn with the reason and a hint; the three plain-HTTP refusals of one burst share
    // fewer lines (one per reason per window), the others counted in `suppressed`.
    let lines: Vec<Value> = webhook
        .log_values()
        .into_iter()
        .filter(|v| {
            log_field(v, "message").and_then(Value::as_str) == Some("TLS handshake refused")
        })
        .collect();
    for (reason, _) in want {
        let of_reason: Vec<&Value> = lines
            .iter()
            .filter(|v| log_field(v, "reason").and_then(Value::as_str) == Some(reason))
            .collect();
        assert!(!of_reason.is_empty(), "no log line for {reason}: {lines:?}");
        for line in &of_reason {
            assert_eq!(line["level"], "WARN", "{line}");
            assert!(
                log_field(line, "hint").is_some_and(Value::is_string),
                "{line}"
            );
            assert!(log_field(line, "peer").is_some(), "{line}");
        }
    }
    let not_tls_lines = lines
        .iter()
        .filter(|v| log_field(v, "reason").and_then(Value::as_str) == Some("not_tls"))
        .count();
    assert!(
        not_tls_lines < 3,
        "{not_tls_lines} lines for 3 refusals in one burst"
    );
    // A trusted client is still served.
    let mut ok = tls_connect(
        webhook.webhook_addr,
        client(&[&server_ca], Some((&client_cert, &client_key))),
    )
    .await
    .unwrap();
    assert_eq!(review(&mut ok, "after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_take_a_host_name() {
    let webhook = Webhook::builder()
        .listen("localhost:0")
        .admin_listen("localhost:0")
        .start();
    // Every address `localhost` resolves to is bound, on one port.
    let listening: Vec<(String, SocketAddr)> = webhook
        .log_values()
        .iter()
        .filter(|v| log_field(v, "message").and_then(Value::as_str) == Some("listening"))
        .filter_map(|v| {
            let listener = log_field(v, "listener")?.as_str()?.to_owned();
            let address = log_field(v, "address")?.as_str()?.parse().ok()?;
            Some((listener, address))
        })
        .collect();
    for listener in ["webhook", "admin"] {
        let addrs: Vec<&SocketAddr> = listening
            .iter()
            .filter(|(l, _)| l == listener)
            .map(|(_, a)| a)
            .collect();
        assert!(!addrs.is_empty(), "{listener}: {listening:?}");
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == addrs[0].port()),
            "{listener}: {addrs:?}"
        );
    }
    let server_ca = std::fs::read_to_string(webhook.ca_file()).unwrap();
    let mut stream = tls_connect(webhook.webhook_addr, client(&[&server_ca], None))
        .await
        .unwrap();
    assert_eq!(review(&mut stream, "by-name").await.unwrap(), "by-name");
    assert_eq!(webhook.admin_get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut webhook = Webhook::builder()
        .args(&["--shutdown-delay", "3", "--shutdown-grace", "15"])
        .start();
    let trust = client(
        &[&std::fs::read_to_string(webhook.ca_file()).unwrap()],
        None,
    );
    assert_eq!(webhook.admin_get("/readyz").await.status, 200);

    // A request in flight: headers and half of the body sent before the signal.
    let body = review_body("in-flight");
    let mut in_flight = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    write_head(&mut in_flight, body.len()).await.unwrap();
    in_flight.write_all(&body[..body.len() / 2]).await.unwrap();
    in_flight.flush().await.unwrap();
    // An idle keep-alive connection too.
    let mut idle = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut idle, "before").await.unwrap(), "before");

    webhook.signal("TERM");
    let signalled = Instant::now();
    let deadline = Instant::now() + WAIT;
    while webhook.admin_get("/readyz").await.status != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // During the delay, new connections are still served.
    let mut during = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(
        review(&mut during, "during-delay").await.unwrap(),
        "during-delay"
    );

    // After the delay the listener closes; the in-flight request still completes.
    // Wait out the 3 s delay (with a margin for a busy machine), counted from the signal.
    tokio::time::sleep_until((signalled + Duration::from_secs(4)).into()).await;
    assert!(
        tls_connect(webhook.webhook_addr, trust.clone())
            .await
            .is_err(),
        "new connections are refused after the delay"
    );
    in_flight.write_all(&body[body.len() / 2..]).await.unwrap();
    let (status, answer) = read_response(&mut in_flight)
        .await
        .expect("the in-flight request is answered");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["response"]["uid"], "in-flight");

    let status = webhook
        .wait_exit(WAIT)
        .expect("the process exits after draining");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut webhook = Webhook::builder()
        .args(&["--shutdown-delay", "60", "--shutdown-grace", "60"])
        .start();
    webhook.signal("TERM");
    let deadline = Instant::now() + WAIT;
    while webhook.admin_get("/readyz").await.status != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(webhook.is_running(), "the first signal starts a 60 s drain");
    webhook.signal("INT");
    let status = webhook
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal exits at once");
    assert_ne!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_with_408() {
    let webhook = Webhook::start();
    let trust = client(
        &[&std::fs::read_to_string(webhook.ca_file()).unwrap()],
        None,
    );
    let body = review_body("slow");
    let mut slow = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    write_head(&mut slow, body.len()).await.unwrap();
    slow.write_all(&body[..10]).await.unwrap();
    slow.flush().await.unwrap();
    // The server gives up on the body after its read timeout (10 s) and says so.
    let (status, answer) = read_response(&mut slow)
        .await
        .expect("an answer instead of a hang");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&answer));
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("did not arrive"),
        "{v}"
    );
    // Others are served meanwhile and after.
    let mut other = tls_connect(webhook.webhook_addr, trust).await.unwrap();
    assert_eq!(review(&mut other, "other").await.unwrap(), "other");
}
