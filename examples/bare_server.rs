//! The floor for the benchmark: a bare TLS server on stage-guard's own stack (tokio, tokio-rustls with the
//! ring provider, the same rustls server configuration and certificate loading, hyper http1 with the same
//! connection settings) that reads the whole request body and answers one constant AdmissionReview.
//!
//! ```text
//! cargo run --release --example bare_server -- --listen 127.0.0.1:8443 --admin-listen 127.0.0.1:8080 \
//!     --tls-cert-file certs/dev/tls.crt --tls-key-file certs/dev/tls.key
//! ```
//!
//! Like stage-guard it logs one JSON line per bound listener on stderr and answers `GET /readyz` on the
//! plain admin listener, so the benchmark drives both the same way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use stage_guard::pem::load_certified_key;
use stage_guard::server::reload::ReloadingCertResolver;
use stage_guard::server::tls::{accept_with_timeout, server_config};
use stage_guard::server::{HANDSHAKE_TIMEOUT, http1_builder};
use tokio::net::TcpListener;

/// The answer to every review: allowed, echoing nothing.
const ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;
/// stage-guard's default `--max-body-bytes`.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

struct Args {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut admin_listen = None;
    let mut cert = None;
    let mut key = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().context("--listen")?),
            "--admin-listen" => admin_listen = Some(value()?.parse().context("--admin-listen")?),
            "--tls-cert-file" => cert = Some(PathBuf::from(value()?)),
            "--tls-key-file" => key = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        listen: listen.context("--listen is required")?,
        admin_listen: admin_listen.context("--admin-listen is required")?,
        cert: cert.context("--tls-cert-file is required")?,
        key: key.context("--tls-key-file is required")?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // The same runtime stage-guard builds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

fn listening(listener: &str, addr: SocketAddr) {
    eprintln!(
        r#"{{"level":"INFO","fields":{{"message":"listening","listener":"{listener}","address":"{addr}"}}}}"#
    );
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let loaded = load_certified_key(&args.cert, &args.key)?;
    let tls = server_config(Arc::new(ReloadingCertResolver::new(loaded)), None)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let webhook = TcpListener::bind(args.listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    listening("webhook", webhook.local_addr()?);
    listening("admin", admin.local_addr()?);
    tokio::spawn(admin_loop(admin));

    loop {
        let (tcp, _) = match webhook.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = accept_with_timeout(&acceptor, tcp, HANDSHAKE_TIMEOUT).await else {
                return;
            };
            let _ = http1_builder()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(review))
                .await;
        });
    }
}

/// Reads the whole body, then answers the constant.
async fn review(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => {
            let body = collected.to_bytes();
            std::hint::black_box(&body);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Plain HTTP: `/readyz` answers 200 once the process is serving.
async fn admin_loop(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
