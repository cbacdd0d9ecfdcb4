//! HTTPS client that talks to the webhook as kube-apiserver does: TLS verified against the dev CA
//! only, SNI `localhost` (or a service name), ALPN `http/1.1`, HTTP/1.1 keep-alive connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Upper bound for connecting plus one request/response; generous so a loaded CI machine passes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE: usize = 16;

pub struct TlsOptions {
    pub versions: Vec<&'static SupportedProtocolVersion>,
    pub alpn: Vec<Vec<u8>>,
    pub server_name: String,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            server_name: "localhost".into(),
        }
    }
}

impl TlsOptions {
    pub fn only(version: &'static SupportedProtocolVersion) -> Self {
        TlsOptions {
            versions: vec![version],
            ..Self::default()
        }
    }
}

/// A rustls client configuration whose only trust anchor is the given CA file.
pub fn tls_config(ca_file: &Path, opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&opts.versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// A request as bytes on the wire; `headers` are sent as given (plus `Host`).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn new(method: Method, path: &str) -> Self {
        RawRequest {
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A POST with the API server's headers.
    pub fn review(path: &str, body: Vec<u8>) -> Self {
        RawRequest {
            method: Method::POST,
            path: path.to_string(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json, */*".into()),
                ("User-Agent".into(), "kube-apiserver-admission".into()),
            ],
            body,
        }
    }

    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One TLS connection with an HTTP/1.1 client on top; requests go out one after another on it.
pub struct HttpsConn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    host: String,
    pub alpn: Option<Vec<u8>>,
    pub protocol: Option<ProtocolVersion>,
    pub requests_sent: usize,
}

impl Drop for HttpsConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<HttpsConn, String> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let protocol = session.protocol_version();
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, String>(HttpsConn {
            sender,
            driver,
            host: format!("{server_name}:{}", addr.port()),
            alpn,
            protocol,
            requests_sent: 0,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
}

impl HttpsConn {
    /// True once the server (or an error) closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn send(&mut self, req: RawRequest) -> Result<RawResponse, String> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(req))
            .await
            .map_err(|_| "request timed out".to_string())?
    }

    async fn send_inner(&mut self, req: RawRequest) -> Result<RawResponse, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not usable: {e}"))?;
        let mut builder = Request::builder().method(req.method).uri(req.path);
        if !req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("Host", &self.host);
        }
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| format!("building the request: {e}"))?;
        self.requests_sent += 1;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the response body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// A small pool of keep-alive connections, reused for many requests as the API server does.
pub struct HttpsPool {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: String,
    idle: Mutex<Vec<HttpsConn>>,
    opened: AtomicUsize,
}

impl HttpsPool {
    pub fn new(addr: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> Self {
        HttpsPool {
            addr,
            config,
            server_name: server_name.to_string(),
            idle: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
        }
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    pub async fn connect(&self) -> Result<HttpsConn, String> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        connect(self.addr, self.config.clone(), &self.server_name).await
    }

    fn take_idle(&self) -> Option<HttpsConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: HttpsConn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    pub async fn send(&self, req: RawRequest) -> Result<RawResponse, String> {
        if let Some(mut conn) = self.take_idle() {
            match conn.send(req.clone()).await {
                Ok(res) => {
                    self.put_back(conn);
                    return Ok(res);
                }
                // Like Go's transport: a reused connection the server closed while idle is retried
                // once on a new one (the keep-alive test uses a single connection and sees closes).
                Err(e) if conn.is_closed() && !e.contains("timed out") => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        let res = conn.send(req).await?;
        self.put_back(conn);
        Ok(res)
    }

    pub async fn post_review(&self, path: &str, body: Vec<u8>) -> Result<RawResponse, String> {
        self.send(RawRequest::review(path, body)).await
    }
}

/// Plain-HTTP GET on the admin listener (new connection each time).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<RawResponse, String> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("Host", addr.to_string())
            .header("User-Agent", "kube-probe/1.32")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok::<_, String>(RawResponse {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
}
