//! The load generator: keep-alive HTTPS/1.1 connections (hyper client over tokio-rustls, ring provider),
//! a fresh uid in every request, closed loop for throughput and open loop at a fixed rate for latency.
//! Latencies go into an HDR histogram (microseconds). A response other than 200, or a stage-guard answer
//! that does not echo the uid, counts as an error.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::fixtures::Template;

/// Where to send and how to check the answers.
pub struct Target {
    pub addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    /// stage-guard must echo the uid; the baseline answers a constant.
    pub check_uid: bool,
}

impl Target {
    /// A client that trusts the CA in `ca_pem` and offers ALPN `http/1.1`, as the API server does.
    pub fn new(addr: SocketAddr, ca_pem: &[u8], check_uid: bool) -> anyhow::Result<Target> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.context("CA PEM")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            check_uid,
        })
    }
}

/// A request template with its parts as shared buffers, so sending costs no copy of the body.
pub struct Prepared {
    path: &'static str,
    head: Bytes,
    tail: Bytes,
    /// A review with a fresh uid between head and tail; otherwise `head` is sent as it is.
    with_uid: bool,
}

impl Prepared {
    /// A body sent byte for byte (no uid put in, none checked): for replaying a fuzz corpus.
    pub fn raw(path: &'static str, body: Vec<u8>) -> Prepared {
        Prepared {
            path,
            head: Bytes::from(body),
            tail: Bytes::new(),
            with_uid: false,
        }
    }
}

pub fn prepare(templates: &[Template]) -> Arc<Vec<Prepared>> {
    Arc::new(
        templates
            .iter()
            .map(|t| Prepared {
                path: t.path,
                head: Bytes::from(t.head.clone()),
                tail: Bytes::from(t.tail.clone()),
                with_uid: true,
            })
            .collect(),
    )
}

/// head + uid + tail, sent as three frames of known total length.
pub struct ReviewBody {
    frames: [Option<Bytes>; 3],
    next: usize,
    len: u64,
}

impl Body for ReviewBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        while this.next < this.frames.len() {
            let frame = this.frames[this.next].take();
            this.next += 1;
            if let Some(b) = frame {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

pub type Sender = SendRequest<ReviewBody>;

/// A TLS connection to the target (TCP + handshake), nothing sent yet.
pub async fn tls_connect(
    target: &Target,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(target.connector.connect(name, tcp).await?)
}

/// Opens one keep-alive connection (TCP + TLS handshake + HTTP/1.1).
pub async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let tls = tls_connect(target).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub async fn connect_all(target: &Target, n: usize) -> anyhow::Result<Vec<Sender>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(connect(target).await?);
    }
    Ok(out)
}

/// What one run saw.
pub struct Stats {
    /// Latency of each successful request recorded in the window, microseconds.
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    /// Error kinds and how often (status codes, `uid not echoed`, transport errors).
    pub error_kinds: BTreeMap<String, u64>,
    /// Open loop: requests sent later than planned because their connection was still busy.
    pub late: u64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // 1 µs to 60 s at 3 significant digits; these bounds are valid, so this cannot fail.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!()),
            ok: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            late: 0,
        }
    }

    pub fn error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.errors += other.errors;
        self.late += other.late;
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.hist.value_at_quantile(p / 100.0) as f64 / 1000.0
    }
}

/// The measurement window of a run: requests before `measure_from` warm up and are not counted.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, measure: Duration) -> Window {
        let start = Instant::now();
        Window {
            start,
            measure_from: start + warmup,
            end: start + warmup + measure,
        }
    }
}

pub enum Outcome {
    Ok,
    Error(String),
    /// The connection is unusable; reconnect.
    Broken(String),
    /// The connection was closed before the request could be written (the server had said
    /// `Connection: close`, or closed it idle): nothing reached the server, so the API server's
    /// client sends such a request again on a new connection.
    NotSent(String),
}

/// A review request from a template, with a fresh uid when the template has a place for one
/// (returned, to check the answer against; empty for a replayed body sent as it is).
pub fn review_request(t: &Prepared) -> (hyper::Request<ReviewBody>, Bytes) {
    let mut uid_buf = [0u8; 36];
    let uid = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut uid_buf);
    let uid = if t.with_uid {
        Bytes::copy_from_slice(uid.as_bytes())
    } else {
        Bytes::new()
    };
    let len = (t.head.len() + uid.len() + t.tail.len()) as u64;
    let body = ReviewBody {
        frames: [
            Some(t.head.clone()),
            (!uid.is_empty()).then(|| uid.clone()),
            (!t.tail.is_empty()).then(|| t.tail.clone()),
        ],
        next: 0,
        len,
    };
    let mut request = hyper::Request::new(body);
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = hyper::Uri::from_static(t.path);
    let headers = request.headers_mut();
    headers.insert(HOST, HeaderValue::from_static("localhost"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (request, uid)
}

/// Why an answer is not the expected one: not 200, or (for stage-guard) not echoing the uid.
pub fn answer_error(
    target: &Target,
    status: hyper::StatusCode,
    body: &[u8],
    uid: &[u8],
) -> Option<String> {
    if status != hyper::StatusCode::OK {
        return Some(format!("HTTP {}", status.as_u16()));
    }
    if target.check_uid && !uid.is_empty() && !body.windows(uid.len()).any(|w| w == uid) {
        return Some("uid not echoed".into());
    }
    None
}

pub async fn send(sender: &mut Sender, target: &Target, t: &Prepared) -> Outcome {
    let (request, uid) = review_request(t);
    if let Err(e) = sender.ready().await {
        return Outcome::NotSent(format!("connection: {e}"));
    }
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => return Outcome::Broken(format!("request: {e}")),
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Outcome::Broken(format!("response body: {e}")),
    };
    match answer_error(target, status, &body, &uid) {
        Some(kind) => Outcome::Error(kind),
        None => Outcome::Ok,
    }
}

/// Sends one request; a broken connection is replaced. Returns the result and when it was sent and done.
async fn exchange(
    sender: &mut Sender,
    target: &Target,
    t: &Prepared,
) -> anyhow::Result<(Result<(), String>, Instant, Instant)> {
    let sent = Instant::now();
    let outcome = send(sender, target, t).await;
    let done = Instant::now();
    let result = match outcome {
        Outcome::Ok => Ok(()),
        Outcome::Error(kind) => Err(kind),
        Outcome::Broken(kind) | Outcome::NotSent(kind) => {
            // A server that keeps refusing should end the run, not spin it.
            tokio::time::sleep(Duration::from_millis(10)).await;
            *sender = connect(target).await?;
            Err(kind)
        }
    };
    Ok((result, sent, done))
}

/// Sends `count` requests one after another over one keep-alive connection, cycling through the
/// templates; returns how many were answered as expected. For profiling a server started by hand
/// (`bench --send`), where a fixed amount of work matters and time does not.
pub async fn send_count(
    target: &Target,
    templates: &[Prepared],
    count: usize,
) -> anyhow::Result<usize> {
    let mut sender = connect(target).await?;
    let mut ok = 0;
    for i in 0..count {
        let (result, _, _) = exchange(&mut sender, target, &templates[i % templates.len()]).await?;
        ok += usize::from(result.is_ok());
    }
    Ok(ok)
}

impl Stats {
    pub fn book(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let _ = self.hist.record((latency.as_micros() as u64).max(1));
            }
            Err(kind) => self.error(kind),
        }
    }
}

/// Closed loop: every connection sends its next request as soon as the previous answer is in. A request
/// counts when its answer arrives inside the window.
pub async fn closed_loop(
    target: Arc<Target>,
    templates: Arc<Vec<Prepared>>,
    senders: Vec<Sender>,
    window: Window,
) -> anyhow::Result<Stats> {
    let mut tasks = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let (target, templates) = (target.clone(), templates.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut i = w;
            while Instant::now() < window.end {
                let t = &templates[i % templates.len()];
                i += 1;
                let (result, sent, done) = exchange(&mut sender, &target, t).await?;
                if done >= window.measure_from && done <= window.end {
                    stats.book(result, done - sent);
                }
            }
            anyhow::Ok(stats)
        }));
    }
    collect(tasks).await
}

/// Open loop at `rate` requests/s spread over the connections: request `i` is due at `start + i/rate` on
/// connection `i mod n`, and counts when it was due inside the window. The latency of a request that had
/// to wait for its connection counts from when it was due (no coordinated omission); otherwise from when
/// it was sent, so the client's timer slack is not billed to the server.
pub async fn open_loop(
    target: Arc<Target>,
    templates: Arc<Vec<Prepared>>,
    senders: Vec<Sender>,
    rate: f64,
    window: Window,
) -> anyhow::Result<Stats> {
    let n = senders.len();
    let period = Duration::from_secs_f64(1.0 / rate);
    // A server far slower than the rate would keep the workers busy long after the window; stop them.
    let hard_stop = window.end + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let (target, templates) = (target.clone(), templates.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut i = w;
            let mut free_at = window.start;
            loop {
                let due = window.start + period.mul_f64(i as f64);
                if due >= window.end || Instant::now() >= hard_stop {
                    break;
                }
                let late = free_at > due;
                if !late {
                    tokio::time::sleep_until(due).await;
                }
                let t = &templates[i % templates.len()];
                let (result, sent, done) = exchange(&mut sender, &target, t).await?;
                if due >= window.measure_from {
                    stats.late += u64::from(late);
                    stats.book(result, done - if late { due } else { sent });
                }
                free_at = done;
                i += n;
            }
            anyhow::Ok(stats)
        }));
    }
    collect(tasks).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Stats>>>,
) -> anyhow::Result<Stats> {
    let mut total = Stats::new();
    for t in tasks {
        total.merge(t.await??);
    }
    Ok(total)
}
