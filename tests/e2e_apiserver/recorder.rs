//! A webhook that only records: it answers every AdmissionReview with `allowed: true` and keeps the
//! request (path with query, and body) so a test can read exactly what kube-apiserver sent. A test
//! may give it something to do before it answers (a concurrent write, say), run off the server's
//! threads.

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One recorded call: the request target (`/mutate?timeout=5s`) and the AdmissionReview.
pub type Recorded = (String, Value);

/// What to do with each AdmissionReview before answering it.
pub type BeforeAnswer = Arc<dyn Fn(&Value) + Send + Sync>;

pub struct Recorder {
    pub addr: SocketAddr,
    reviews: Arc<Mutex<Vec<Recorded>>>,
    // Dropping the runtime stops the server.
    _runtime: tokio::runtime::Runtime,
}

impl Recorder {
    /// Serves TLS on 127.0.0.1 with the pair in `cert_dir` (`tls.crt`, `tls.key`).
    pub fn start(cert_dir: &Path) -> Result<Recorder> {
        Recorder::start_with(cert_dir, Arc::new(|_: &Value| {}))
    }

    /// As [`Recorder::start`], running `before_answer` on each review before it is answered.
    pub fn start_with(cert_dir: &Path, before_answer: BeforeAnswer) -> Result<Recorder> {
        let certs = CertificateDer::pem_file_iter(cert_dir.join("tls.crt"))
            .context("read tls.crt")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(cert_dir.join("tls.key")).context("read tls.key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let reviews: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let kept = reviews.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let kept = kept.clone();
                let before_answer = before_answer.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        record(kept.clone(), before_answer.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Recorder {
            addr,
            reviews,
            _runtime: runtime,
        })
    }

    /// Everything recorded so far, oldest first.
    pub fn reviews(&self) -> Vec<Recorded> {
        self.reviews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.reviews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

async fn record(
    kept: Arc<Mutex<Vec<Recorded>>>,
    before_answer: BeforeAnswer,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = req.uri().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let uid = review["request"]["uid"].clone();
    let seen = review.clone();
    // A panicking hook only loses its own work; the answer still goes out.
    let _ = tokio::task::spawn_blocking(move || before_answer(&seen)).await;
    kept.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((target, review));
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap_or_default())
}
