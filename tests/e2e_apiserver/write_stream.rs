//! A continuous stream of stage changes through the API server, the way a pipeline's clients make them:
//! client-go keeps its HTTPS connection to the API server alive, so the stream does too (and reconnects
//! after a transport error). Each write is a merge PATCH of the stage label to the other stage of a loop,
//! as a workflow step's `kubectl patch` sends it, and its outcome is counted in the phase it started in.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::STAGE_LABEL;

/// Longer than the webhooks' timeoutSeconds (5 s) twice over: a write never waits forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// A breath between writes, so the stream does not starve the commands that rotate the certificates
/// on 2 shared cores; still dozens of writes a second.
const PAUSE: Duration = Duration::from_millis(10);
/// Failure messages kept per phase.
const KEPT_MESSAGES: usize = 5;

/// The writes of one phase.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub phase: String,
    pub ok: usize,
    pub failed: usize,
    /// The first failures' messages, as the API server (or the transport) gave them.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn attempts(&self) -> usize {
        self.ok + self.failed
    }
}

struct Shared {
    stop: AtomicBool,
    /// One tally per phase, the current one last; each has the instant it began.
    phases: Mutex<Vec<(Tally, Instant)>>,
}

impl Shared {
    fn phases(&self) -> std::sync::MutexGuard<'_, Vec<(Tally, Instant)>> {
        self.phases.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the stream writes to, and as whom.
pub struct Target {
    /// `https://127.0.0.1:PORT` of the API server.
    pub url: String,
    /// The CA that verifies the API server.
    pub ca_file: std::path::PathBuf,
    /// A user's bearer token.
    pub token: String,
    pub namespace: String,
    pub workflow: String,
    /// The loop: the stored stage is `stages[0]`; writes alternate between the two.
    pub stages: [String; 2],
}

pub struct WriteStream {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl WriteStream {
    /// Starts writing at once; the first writes count in `first_phase`.
    pub fn start(target: Target, first_phase: &str) -> Result<WriteStream> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            phases: Mutex::new(vec![(
                Tally {
                    phase: first_phase.to_string(),
                    ..Tally::default()
                },
                Instant::now(),
            )]),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("write-stream".into())
            .spawn(move || runtime.block_on(write_until_stopped(target, writer)))?;
        Ok(WriteStream {
            shared,
            thread: Some(thread),
        })
    }

    /// Writes from now on count in a new phase.
    pub fn phase(&self, name: &str) {
        let mut phases = self.shared.phases();
        if let Some((last, began)) = phases.last_mut() {
            last.elapsed = began.elapsed();
        }
        phases.push((
            Tally {
                phase: name.to_string(),
                ..Tally::default()
            },
            Instant::now(),
        ));
    }

    /// The current phase so far.
    pub fn current(&self) -> Tally {
        self.shared
            .phases()
            .last()
            .map(|(t, began)| Tally {
                elapsed: began.elapsed(),
                ..t.clone()
            })
            .unwrap_or_default()
    }

    /// Waits until the current phase has `n` writes that `counted` counts, for at most `timeout`: a
    /// stream that stalls fails the test here.
    pub fn wait_for(
        &self,
        n: usize,
        what: &str,
        counted: impl Fn(&Tally) -> usize,
        timeout: Duration,
    ) -> Result<Tally> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.current();
            if counted(&now) >= n {
                return Ok(now);
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                bail!("the write stream stopped");
            }
            if Instant::now() >= deadline {
                bail!(
                    "phase {:?}: {} {what} within {timeout:?}, expected {n} (ok {}, failed {}; {:?})",
                    now.phase,
                    counted(&now),
                    now.ok,
                    now.failed,
                    now.failures
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the current phase has `n` writes, successful or not.
    pub fn wait_for_writes(&self, n: usize, timeout: Duration) -> Result<Tally> {
        self.wait_for(n, "writes", Tally::attempts, timeout)
    }

    /// Stops the stream after the write in flight and returns every phase's tally.
    pub fn stop(mut self) -> Vec<Tally> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut phases = self.shared.phases();
        if let Some((last, began)) = phases.last_mut() {
            last.elapsed = began.elapsed();
        }
        phases.iter().map(|(t, _)| t.clone()).collect()
    }
}

/// The phases as a table for the test's output.
pub fn table(tallies: &[Tally]) -> String {
    let mut out = format!(
        "{:<64} {:>6} {:>6} {:>8}\n",
        "phase", "ok", "failed", "seconds"
    );
    let (ok, failed) = tallies
        .iter()
        .fold((0, 0), |(ok, failed), t| (ok + t.ok, failed + t.failed));
    for t in tallies {
        out.push_str(&format!(
            "{:<64} {:>6} {:>6} {:>8.1}\n",
            t.phase,
            t.ok,
            t.failed,
            t.elapsed.as_secs_f64()
        ));
        if let Some(first) = t.failures.first() {
            out.push_str(&format!("    first failure: {first}\n"));
        }
    }
    out.push_str(&format!("{:<64} {ok:>6} {failed:>6}\n", "all phases"));
    out
}

async fn write_until_stopped(target: Target, shared: Arc<Shared>) {
    let path = format!(
        "/apis/argoproj.io/v1alpha1/namespaces/{}/workflows/{}",
        target.namespace, target.workflow
    );
    let mut connection: Option<Connection> = None;
    let mut next = 1;
    while !shared.stop.load(Ordering::SeqCst) {
        let phase = shared.phases().len() - 1;
        let stage = &target.stages[next];
        let outcome = match connection.as_mut() {
            Some(c) => c.move_to(&path, stage).await,
            None => match Connection::open(&target).await {
                Ok(mut c) => {
                    let outcome = c.move_to(&path, stage).await;
                    connection = Some(c);
                    outcome
                }
                Err(e) => Err(Failure::Transport(format!("connecting: {e:#}"))),
            },
        };
        {
            let mut phases = shared.phases();
            let Some((tally, _)) = phases.get_mut(phase) else {
                break;
            };
            match outcome {
                Ok(()) => {
                    tally.ok += 1;
                    next = 1 - next;
                }
                Err(failure) => {
                    tally.failed += 1;
                    if tally.failures.len() < KEPT_MESSAGES {
                        tally.failures.push(failure.to_string());
                    }
                    if matches!(failure, Failure::Transport(_)) {
                        connection = None;
                    }
                }
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

#[derive(Debug)]
enum Failure {
    /// The API server answered, with an error.
    Refused(String),
    /// No answer: the connection broke or the write timed out.
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(m) => write!(f, "{m}"),
            Failure::Transport(m) => write!(f, "transport: {m}"),
        }
    }
}

/// One kept-alive HTTP/1.1 connection to the API server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    token: String,
}

impl Connection {
    async fn open(target: &Target) -> Result<Connection> {
        let authority = target
            .url
            .strip_prefix("https://")
            .context("the API server URL is not https")?
            .to_string();
        let (host, _) = authority.rsplit_once(':').context("no port in the URL")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(Path::new(&target.ca_file))? {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            authority,
            token: target.token.clone(),
        })
    }

    /// A merge patch of the stage label; success is a 200 whose object holds the new stage.
    async fn move_to(&mut self, path: &str, stage: &str) -> Result<(), Failure> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.patch(path, stage)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Transport(format!(
                "no answer within {WRITE_TIMEOUT:?}"
            ))),
        }
    }

    async fn patch(&mut self, path: &str, stage: &str) -> Result<(), Failure> {
        let transport = |e: &dyn std::fmt::Display| Failure::Transport(e.to_string());
        let body = json!({"metadata": {"labels": {STAGE_LABEL: stage}}}).to_string();
        let request = hyper::Request::patch(path)
            .header("host", &self.authority)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/merge-patch+json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(&e))?;
        self.sender.ready().await.map_err(|e| transport(&e))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if status != 200 {
            let message = answer["message"].as_str().unwrap_or("(no message)");
            return Err(Failure::Refused(format!("HTTP {status}: {message}")));
        }
        match answer["metadata"]["labels"][STAGE_LABEL].as_str() {
            Some(stored) if stored == stage => Ok(()),
            other => Err(Failure::Refused(format!(
                "HTTP 200 but the stored stage is {other:?}, not {stage}"
            ))),
        }
    }
}
