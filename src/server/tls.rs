//! TLS for the webhook listener: loading the serving pair, swapping it when the files change, the rustls
//! server configuration and a bounded handshake (SPEC 5 and 6).
//!
//! Only the ring provider is used, passed explicitly to every builder, so no process-wide default provider
//! has to be installed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

/// The only application protocol the webhook speaks; the API server sends HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: file not found", path.display())]
    Missing { path: PathBuf },
    #[error("reading {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error("{}: malformed PEM: {cause}", path.display())]
    Pem { path: PathBuf, cause: pem::Error },
    #[error("{}: no certificate in PEM (expected a CERTIFICATE block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in PEM (expected a PKCS#8, PKCS#1 or SEC1 private key block)", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("{}: unusable private key: {cause}", path.display())]
    UnusableKey { path: PathBuf, cause: rustls::Error },
    #[error("{}: invalid certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("private key {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("bad client CA {}: {reason}", path.display())]
    BadClientCa { path: PathBuf, reason: String },
    #[error("building the TLS server configuration: {0}")]
    Config(rustls::Error),
}

/// The ring provider, built once; every rustls builder in stage-guard gets it explicitly.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A serving chain and its key, checked to belong together.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, unix seconds.
    pub not_after_unix: i64,
}

/// Reads a PEM certificate file (leaf first, then any intermediates) and a PEM private key file (PKCS#8,
/// PKCS#1 or SEC1), and checks that the key belongs to the leaf.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let cert_pem = read_file(cert)?;
    let key_pem = read_file(key)?;
    parse_certified_key(cert, &cert_pem, key, &key_pem)
}

/// [`load_certified_key`] on bytes already read; the paths only name the files in errors.
pub fn parse_certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<LoadedCert, TlsError> {
    let chain = parse_certificates(cert_path, cert_pem)?;
    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_owned(),
            });
        }
        Err(cause) => {
            return Err(TlsError::Pem {
                path: key_path.to_owned(),
                cause,
            });
        }
    };

    let not_after_unix = {
        let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
            path: cert_path.to_owned(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })?;
        parsed.validity().not_after.timestamp()
    };

    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|cause| TlsError::UnusableKey {
            path: key_path.to_owned(),
            cause,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after_unix,
    })
}

// === impl ReloadingCertResolver ===

/// Serves the current pair to every handshake; [`watch_cert_files`] swaps it. Connections already open keep
/// the pair they started with.
#[derive(Debug)]
pub struct ReloadingCertResolver {
    current: RwLock<LoadedCert>,
}

impl ReloadingCertResolver {
    pub fn new(initial: LoadedCert) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// The serving leaf's notAfter, unix seconds.
    pub fn current_not_after(&self) -> i64 {
        self.read().not_after_unix
    }

    /// The chain and key new handshakes get.
    pub fn current_key(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// Makes `next` the pair for new handshakes.
    pub fn replace(&self, next: LoadedCert) {
        // The guarded value is replaced whole, so a poisoned lock still holds a consistent pair.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    fn read(&self) -> LoadedCert {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }
}

/// TLS 1.2 and 1.3 only, ALPN exactly `http/1.1`, the certificate from `resolver`. With `client_ca`, every
/// client must present a certificate that chains to a CA in that PEM bundle; without, none is asked for.
pub fn server_config(
    resolver: Arc<ReloadingCertResolver>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::BadClientCa {
        path: path.to_owned(),
        reason,
    };
    let pem = read_file(path).map_err(|e| bad(e.to_string()))?;
    let cas = parse_certificates(path, &pem).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| bad(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// What [`watch_cert_files`] reports after each load attempt.
#[derive(Debug)]
pub enum ReloadEvent {
    Reloaded { not_after_unix: i64 },
    Failed { error: TlsError },
}

/// Polls `cert` and `key` every `interval` until the future is dropped. When their bytes differ from the
/// pair last seen (loaded or refused), loads them: a good pair replaces the resolver's at once; a bad one is
/// logged and reported once, when a second poll finds the same bytes (the two files are read one after the
/// other, so a poll that falls inside an update can see a new certificate with the old key), and the last
/// good pair stays. The files are opened through their paths each time, which follows kubelet's atomic
/// `..data` symlink swap of a mounted Secret.
pub async fn watch_cert_files(
    resolver: Arc<ReloadingCertResolver>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    on_event: impl Fn(ReloadEvent) + Send + Sync + 'static,
) {
    // tokio's interval panics on zero.
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = CertWatch::new(cert, key);
    loop {
        ticker.tick().await;
        let read = read_pair(&watch.cert, &watch.key).await;
        if let Some(event) = watch.observe(read, &resolver) {
            on_event(event);
        }
    }
}

/// The decisions of [`watch_cert_files`], one poll at a time.
struct CertWatch {
    cert: PathBuf,
    key: PathBuf,
    /// The files as last loaded or reported as refused; `None` before the first poll.
    settled: Option<Observed>,
    /// Refused files seen once, not reported yet.
    suspect: Option<Observed>,
}

/// The files' contents at one poll, or why they could not be read.
#[derive(PartialEq, Eq)]
enum Observed {
    Files(Vec<u8>, Vec<u8>),
    Unreadable(String),
}

impl CertWatch {
    fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            settled: None,
            suspect: None,
        }
    }

    fn observe(
        &mut self,
        read: Result<(Vec<u8>, Vec<u8>), TlsError>,
        resolver: &ReloadingCertResolver,
    ) -> Option<ReloadEvent> {
        let observed = match &read {
            Ok((cert_pem, key_pem)) => Observed::Files(cert_pem.clone(), key_pem.clone()),
            Err(e) => Observed::Unreadable(e.to_string()),
        };
        if self.settled.as_ref() == Some(&observed) {
            self.suspect = None;
            return None;
        }
        let first = self.settled.is_none();
        let loaded = read.and_then(|(cert_pem, key_pem)| {
            parse_certified_key(&self.cert, &cert_pem, &self.key, &key_pem)
        });
        match loaded {
            // The files still hold the pair the server started with: nothing to reload.
            Ok(loaded) if first && loaded.key.cert == resolver.current_key().cert => {
                self.settle(observed);
                None
            }
            Ok(loaded) => {
                self.settle(observed);
                let not_after_unix = loaded.not_after_unix;
                resolver.replace(loaded);
                tracing::info!(
                    cert = %self.cert.display(),
                    not_after = %format_unix(not_after_unix),
                    "TLS certificate reloaded"
                );
                // Served anyway: refusing it would leave the previous one, which is older still.
                if not_after_unix < unix_now() {
                    tracing::warn!(
                        cert = %self.cert.display(),
                        not_after = %format_unix(not_after_unix),
                        "the reloaded TLS certificate has already expired"
                    );
                }
                Some(ReloadEvent::Reloaded { not_after_unix })
            }
            Err(error) if self.suspect.as_ref() == Some(&observed) => {
                self.settle(observed);
                tracing::error!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    error = %error,
                    "TLS certificate reload refused; keeping the previous certificate"
                );
                Some(ReloadEvent::Failed { error })
            }
            Err(_) => {
                self.suspect = Some(observed);
                None
            }
        }
    }

    fn settle(&mut self, observed: Observed) {
        self.settled = Some(observed);
        self.suspect = None;
    }
}

/// A TLS handshake on an accepted connection, given up after `timeout`; the connection is then closed.
pub async fn accept_with_timeout(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, io::Error> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(handshake) => handshake,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS handshake not completed within {timeout:?}"),
        )),
    }
}

fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| TlsError::Pem {
            path: path.to_owned(),
            cause,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| read_error(path, e))
}

async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert_pem = tokio::fs::read(cert)
        .await
        .map_err(|e| read_error(cert, e))?;
    let key_pem = tokio::fs::read(key).await.map_err(|e| read_error(key, e))?;
    Ok((cert_pem, key_pem))
}

fn read_error(path: &Path, cause: io::Error) -> TlsError {
    match cause.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Read {
            path: path.to_owned(),
            cause,
        },
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn format_unix(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        Err(_) => format!("{secs} (unix seconds)"),
    }
}

/// Loopback TLS servers and clients shared by the tests of this module and of `certs`.
#[cfg(test)]
pub(crate) mod testing {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio_rustls::client::TlsStream;

    use super::{accept_with_timeout, crypto_provider};

    /// Bounds every network step of a test.
    pub(crate) const STEP: Duration = Duration::from_secs(5);
    pub(crate) const BOTH_VERSIONS: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];

    /// A TLS echo server on 127.0.0.1; stops accepting when dropped.
    pub(crate) struct EchoServer {
        pub(crate) addr: SocketAddr,
        task: JoinHandle<()>,
    }

    impl Drop for EchoServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(crate) async fn spawn_echo_server(config: Arc<ServerConfig>) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = accept_with_timeout(&acceptor, tcp, STEP).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err()
                                    || tls.flush().await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        EchoServer { addr, task }
    }

    /// A client trusting only `trusted_ca_pems`, offering ALPN http/1.1, with an optional client certificate.
    pub(crate) fn client_config(
        trusted_ca_pems: &[&str],
        identity: Option<(&str, &str)>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for pem in trusted_ca_pems {
            for ca in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(ca.unwrap()).unwrap();
            }
        }
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![super::ALPN_HTTP1.to_vec()];
        // Every connection does a full handshake, so it shows the certificate the server serves now (a
        // resumed session reports the certificate of the session it resumes).
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    pub(crate) async fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect(addr).await?;
        tokio::time::timeout(
            STEP,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client handshake timed out"))?
    }

    /// Sends `message` and expects it back; with TLS 1.3 a refused client certificate shows up here.
    pub(crate) async fn echo(stream: &mut TlsStream<TcpStream>, message: &[u8]) -> io::Result<()> {
        tokio::time::timeout(STEP, async {
            stream.write_all(message).await?;
            stream.flush().await?;
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).await?;
            if back != message {
                return Err(io::Error::other("echo returned other bytes"));
            }
            Ok(())
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "echo timed out"))?
    }

    /// Connects, checks that data flows, and returns the leaf certificate the server presented.
    pub(crate) async fn fetch_leaf(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<CertificateDer<'static>> {
        let mut stream = connect(addr, config, server_name).await?;
        echo(&mut stream, b"ping").await?;
        peer_leaf(&stream).ok_or_else(|| io::Error::other("no peer certificate"))
    }

    pub(crate) fn peer_leaf(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned()
    }

    pub(crate) fn leaf_der(cert_pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use base64::Engine as _;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::testing::*;
    use super::*;
    use crate::certs::{self, CertBundle};

    fn bundle(san: &str) -> CertBundle {
        certs::generate_bundle(&[san.to_owned()]).unwrap()
    }

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn resolver_for(b: &CertBundle) -> Arc<ReloadingCertResolver> {
        let loaded = parse_certified_key(
            Path::new("tls.crt"),
            b.cert_pem.as_bytes(),
            Path::new("tls.key"),
            b.key_pem.as_bytes(),
        )
        .unwrap();
        Arc::new(ReloadingCertResolver::new(loaded))
    }

    /// The SEC1 ("EC PRIVATE KEY") form of a PKCS#8 EC key: the octet string PKCS#8 wraps it in.
    fn sec1_pem(pkcs8_pem: &str) -> String {
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
        let (_, outer) = x509_parser::der_parser::parse_der(pkcs8.secret_pkcs8_der()).unwrap();
        let sec1 = outer.as_sequence().unwrap()[2].as_slice().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(sec1);
        format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n")
    }

    #[test]
    fn load_accepts_full_chain_and_reports_leaf_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle("localhost");
        let chain = format!("{}{}", b.cert_pem, b.ca_cert_pem);
        let cert = write(dir.path(), "tls.crt", chain.as_bytes());
        let key = write(dir.path(), "tls.key", b.key_pem.as_bytes());

        let loaded = load_certified_key(&cert, &key).unwrap();

        assert_eq!(loaded.key.cert.len(), 2, "leaf and CA both kept");
        assert_eq!(loaded.key.cert[0], leaf_der(&b.cert_pem), "leaf first");
        let year_from_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 365 * 86_400;
        assert!(
            (loaded.not_after_unix - year_from_now).abs() < 86_400,
            "notAfter {} is not about a year from now ({year_from_now})",
            loaded.not_after_unix
        );
    }

    #[test]
    fn load_accepts_sec1_keys() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle("localhost");
        let cert = write(dir.path(), "tls.crt", b.cert_pem.as_bytes());
        let key = write(dir.path(), "tls.key", sec1_pem(&b.key_pem).as_bytes());
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .contains("EC PRIVATE KEY")
        );

        let loaded = load_certified_key(&cert, &key).unwrap();
        assert_eq!(loaded.key.cert[0], leaf_der(&b.cert_pem));
    }

    #[test]
    fn load_refuses_the_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (b, other) = (bundle("localhost"), bundle("localhost"));
        let cert = write(dir.path(), "tls.crt", b.cert_pem.as_bytes());
        let key = write(dir.path(), "tls.key", other.key_pem.as_bytes());

        let error = load_certified_key(&cert, &key).unwrap_err();

        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("does not match"), "{message}");
        assert!(message.contains(&*key.to_string_lossy()), "{message}");
    }

    #[test]
    fn load_refuses_missing_empty_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle("localhost");
        let good_cert = write(dir.path(), "tls.crt", b.cert_pem.as_bytes());
        let good_key = write(dir.path(), "tls.key", b.key_pem.as_bytes());
        let empty = write(dir.path(), "empty.pem", b"");
        let garbage = write(dir.path(), "garbage.pem", b"\x00\x01 not pem at all\n");
        let truncated = write(
            dir.path(),
            "truncated.pem",
            &b.cert_pem.as_bytes()[..b.cert_pem.len() / 2],
        );
        let missing = dir.path().join("missing.pem");

        fn variant(error: &TlsError) -> &'static str {
            match error {
                TlsError::Missing { .. } => "Missing",
                TlsError::NoCertificate { .. } => "NoCertificate",
                TlsError::NoPrivateKey { .. } => "NoPrivateKey",
                TlsError::Pem { .. } => "Pem",
                _ => "other",
            }
        }
        // (cert file, key file, expected error, the file the message must name)
        let cases = [
            (&missing, &good_key, "Missing", &missing),
            (&good_cert, &missing, "Missing", &missing),
            (&empty, &good_key, "NoCertificate", &empty),
            (&garbage, &good_key, "NoCertificate", &garbage),
            (&truncated, &good_key, "Pem", &truncated),
            (&good_cert, &empty, "NoPrivateKey", &empty),
            (&good_cert, &garbage, "NoPrivateKey", &garbage),
            // A certificate where the key should be: PEM, but no private key in it.
            (&good_cert, &good_cert, "NoPrivateKey", &good_cert),
        ];
        for (cert, key, expected, named) in cases {
            let error = load_certified_key(cert, key).unwrap_err();
            assert_eq!(variant(&error), expected, "{cert:?} + {key:?}: {error:?}");
            assert!(
                error.to_string().contains(&*named.to_string_lossy()),
                "message does not name {named:?}: {error}"
            );
        }
    }

    /// kubelet's layout for a mounted Secret: `..data` points at a timestamped directory and each key is a
    /// symlink through `..data`; an update writes a new directory and renames a new `..data` over the old.
    #[cfg(unix)]
    fn kubelet_publish(dir: &Path, version: &str, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::symlink;
        let previous = std::fs::read_link(dir.join("..data")).ok();
        let target = dir.join(version);
        std::fs::create_dir(&target).unwrap();
        write(&target, "tls.crt", cert_pem.as_bytes());
        write(&target, "tls.key", key_pem.as_bytes());
        symlink(version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            if std::fs::symlink_metadata(dir.join(name)).is_err() {
                symlink(format!("..data/{name}"), dir.join(name)).unwrap();
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(dir.join(previous)).unwrap();
        }
    }

    /// Polls new connections for up to 10 s until the server presents `expected`.
    async fn wait_for_leaf(
        addr: std::net::SocketAddr,
        client: Arc<rustls::ClientConfig>,
        expected: &CertificateDer<'static>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(leaf) = fetch_leaf(addr, client.clone(), "localhost").await
                && &leaf == expected
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn watcher_follows_kubelet_symlink_swap_and_keeps_the_last_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c, d, e) = (
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
        );
        kubelet_publish(dir.path(), "..2026_a", &a.cert_pem, &a.key_pem);
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let resolver = Arc::new(ReloadingCertResolver::new(
            load_certified_key(&cert, &key).unwrap(),
        ));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = tokio::spawn(watch_cert_files(
            resolver.clone(),
            cert.clone(),
            key.clone(),
            Duration::from_millis(100),
            move |event| sink.lock().unwrap().push(event),
        ));
        let server = spawn_echo_server(server_config(resolver.clone(), None).unwrap()).await;
        let client = client_config(
            &[&a.ca_cert_pem, &b.ca_cert_pem, &e.ca_cert_pem],
            None,
            BOTH_VERSIONS,
        );

        // Connection A, opened before the rotation, stays open throughout.
        let mut conn_a = connect(server.addr, client.clone(), "localhost")
            .await
            .unwrap();
        assert_eq!(peer_leaf(&conn_a), Some(leaf_der(&a.cert_pem)));
        echo(&mut conn_a, b"before rotation").await.unwrap();

        kubelet_publish(dir.path(), "..2026_b", &b.cert_pem, &b.key_pem);
        assert!(
            wait_for_leaf(server.addr, client.clone(), &leaf_der(&b.cert_pem)).await,
            "new connections never got the rotated certificate"
        );
        echo(&mut conn_a, b"after rotation").await.unwrap();
        let b_not_after = resolver.current_not_after();
        {
            let events = events.lock().unwrap();
            assert!(
                matches!(events.as_slice(), [ReloadEvent::Reloaded { not_after_unix }] if *not_after_unix == b_not_after),
                "expected exactly one reload, got {events:?}"
            );
        }

        // A certificate with the key of another bundle is refused, reported once, and B stays.
        kubelet_publish(dir.path(), "..2026_c", &c.cert_pem, &d.key_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several more polls of the same broken files must not report again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let events = events.lock().unwrap();
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(
                matches!(
                    &events[1],
                    ReloadEvent::Failed {
                        error: TlsError::KeyMismatch { .. }
                    }
                ),
                "{events:?}"
            );
        }
        assert_eq!(
            fetch_leaf(server.addr, client.clone(), "localhost")
                .await
                .unwrap(),
            leaf_der(&b.cert_pem)
        );
        assert_eq!(resolver.current_not_after(), b_not_after);
        echo(&mut conn_a, b"after refusal").await.unwrap();

        // A good pair after the broken one is picked up again.
        kubelet_publish(dir.path(), "..2026_e", &e.cert_pem, &e.key_pem);
        assert!(wait_for_leaf(server.addr, client.clone(), &leaf_der(&e.cert_pem)).await);
        assert!(matches!(
            events.lock().unwrap().as_slice(),
            [_, _, ReloadEvent::Reloaded { .. }]
        ));

        watcher.abort();
    }

    #[tokio::test]
    async fn watcher_reports_missing_files_once_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let a = bundle("localhost");
        let cert = write(dir.path(), "tls.crt", a.cert_pem.as_bytes());
        let key = write(dir.path(), "tls.key", a.key_pem.as_bytes());
        let resolver = resolver_for(&a);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = tokio::spawn(watch_cert_files(
            resolver.clone(),
            cert.clone(),
            key.clone(),
            Duration::from_millis(50),
            move |event| sink.lock().unwrap().push(event),
        ));
        // Let the watcher see the pair it started with: that is not a reload.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(events.lock().unwrap().is_empty());

        std::fs::remove_file(&key).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            let events = events.lock().unwrap();
            assert!(
                matches!(events.as_slice(), [ReloadEvent::Failed { error: TlsError::Missing { path } }] if *path == key),
                "{events:?}"
            );
        }
        assert_eq!(resolver.current_key().cert[0], leaf_der(&a.cert_pem));
        watcher.abort();
    }

    fn pair(cert: &CertBundle, key: &CertBundle) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((cert.cert_pem.clone().into(), key.key_pem.clone().into()))
    }

    #[test]
    fn a_torn_read_is_skipped_and_a_lasting_refusal_reported_once() {
        let (a, b, c, d) = (
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
        );
        let resolver = resolver_for(&a);
        let mut watch = CertWatch::new("tls.crt".into(), "tls.key".into());
        let is_reload = |e: &Option<ReloadEvent>| matches!(e, Some(ReloadEvent::Reloaded { .. }));
        let is_mismatch = |e: &Option<ReloadEvent>| {
            matches!(
                e,
                Some(ReloadEvent::Failed {
                    error: TlsError::KeyMismatch { .. }
                })
            )
        };

        assert!(
            watch.observe(pair(&a, &a), &resolver).is_none(),
            "start-up pair"
        );
        // Polled mid-update: the new certificate with the old key.
        assert!(
            watch.observe(pair(&b, &a), &resolver).is_none(),
            "torn read"
        );
        assert!(is_reload(&watch.observe(pair(&b, &b), &resolver)));
        assert_eq!(resolver.current_key().cert[0], leaf_der(&b.cert_pem));
        assert!(
            watch.observe(pair(&b, &b), &resolver).is_none(),
            "unchanged"
        );

        assert!(
            watch.observe(pair(&c, &d), &resolver).is_none(),
            "first sight"
        );
        assert!(is_mismatch(&watch.observe(pair(&c, &d), &resolver)));
        for _ in 0..3 {
            assert!(
                watch.observe(pair(&c, &d), &resolver).is_none(),
                "reported again"
            );
        }
        assert_eq!(resolver.current_key().cert[0], leaf_der(&b.cert_pem));

        // Files that cannot be read count as a refused pair too.
        let missing = || {
            Err(TlsError::Missing {
                path: "tls.key".into(),
            })
        };
        assert!(watch.observe(missing(), &resolver).is_none());
        assert!(matches!(
            watch.observe(missing(), &resolver),
            Some(ReloadEvent::Failed {
                error: TlsError::Missing { .. }
            })
        ));
        assert!(watch.observe(missing(), &resolver).is_none());
        assert!(
            is_reload(&watch.observe(pair(&a, &a), &resolver)),
            "back to a good pair"
        );
    }

    #[tokio::test]
    async fn client_ca_requires_a_certificate_from_that_ca() {
        let dir = tempfile::tempdir().unwrap();
        let serving = bundle("localhost");
        let (client_ca, other_ca) = (bundle("client-ca"), bundle("client-ca"));
        let ca_file = write(
            dir.path(),
            "client-ca.crt",
            client_ca.ca_cert_pem.as_bytes(),
        );
        let config = server_config(resolver_for(&serving), Some(&ca_file)).unwrap();
        let server = spawn_echo_server(config).await;
        let trusted = certs::issue_client_cert(&client_ca, "kube-apiserver");
        let untrusted = certs::issue_client_cert(&other_ca, "kube-apiserver");

        for version in BOTH_VERSIONS {
            let versions = &[*version][..];
            let anonymous = client_config(&[&serving.ca_cert_pem], None, versions);
            let good = client_config(
                &[&serving.ca_cert_pem],
                Some((&trusted.0, &trusted.1)),
                versions,
            );
            let bad = client_config(
                &[&serving.ca_cert_pem],
                Some((&untrusted.0, &untrusted.1)),
                versions,
            );
            assert!(
                fetch_leaf(server.addr, anonymous, "localhost")
                    .await
                    .is_err(),
                "{version:?}: client without a certificate was served"
            );
            assert!(
                fetch_leaf(server.addr, bad, "localhost").await.is_err(),
                "{version:?}: client certificate from another CA was accepted"
            );
            fetch_leaf(server.addr, good, "localhost")
                .await
                .unwrap_or_else(|e| panic!("{version:?}: trusted client refused: {e}"));
        }
    }

    #[tokio::test]
    async fn without_client_ca_anonymous_clients_are_served() {
        let serving = bundle("localhost");
        let server = spawn_echo_server(server_config(resolver_for(&serving), None).unwrap()).await;
        let client = client_config(&[&serving.ca_cert_pem], None, BOTH_VERSIONS);
        assert_eq!(
            fetch_leaf(server.addr, client, "localhost").await.unwrap(),
            leaf_der(&serving.cert_pem)
        );
    }

    #[test]
    fn bad_client_ca_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let serving = bundle("localhost");
        let garbage = write(dir.path(), "garbage.crt", b"not a certificate");
        let missing = dir.path().join("missing.crt");
        for path in [&garbage, &missing] {
            let error = server_config(resolver_for(&serving), Some(path)).unwrap_err();
            assert!(matches!(error, TlsError::BadClientCa { .. }), "{error:?}");
            assert!(
                error.to_string().contains(&*path.to_string_lossy()),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn tls12_and_tls13_clients_negotiate_http11() {
        let serving = bundle("localhost");
        let server = spawn_echo_server(server_config(resolver_for(&serving), None).unwrap()).await;
        for (version, expected) in [
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        ] {
            let client = client_config(&[&serving.ca_cert_pem], None, &[version]);
            let mut stream = connect(server.addr, client, "localhost").await.unwrap();
            echo(&mut stream, b"hello").await.unwrap();
            let session = stream.get_ref().1;
            assert_eq!(session.protocol_version(), Some(expected));
            assert_eq!(session.alpn_protocol(), Some(ALPN_HTTP1));
        }
    }

    #[tokio::test]
    async fn clients_offering_only_other_protocols_are_refused() {
        let serving = bundle("localhost");
        let server = spawn_echo_server(server_config(resolver_for(&serving), None).unwrap()).await;
        let mut h2_only = (*client_config(&[&serving.ca_cert_pem], None, BOTH_VERSIONS)).clone();
        h2_only.alpn_protocols = vec![b"h2".to_vec()];
        assert!(
            fetch_leaf(server.addr, Arc::new(h2_only), "localhost")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn accept_with_timeout_drops_a_silent_client() {
        let serving = bundle("localhost");
        let acceptor =
            tokio_rustls::TlsAcceptor::from(server_config(resolver_for(&serving), None).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let result = tokio::time::timeout(
            STEP,
            accept_with_timeout(&acceptor, tcp, Duration::from_millis(200)),
        )
        .await
        .expect("accept_with_timeout did not return");
        let error = result.expect_err("handshake with a silent client succeeded");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        // The server side is closed: the client reads end-of-stream (or a reset), not a hang.
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(STEP, silent.read(&mut buf))
            .await
            .expect("silent client was not disconnected");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
