//! Loopback TLS servers and clients for the tests of `pem`, `certs` and `server` (test builds only).

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

use crate::pem::crypto_provider;
use crate::server::tls::accept_with_timeout;

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
                            if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err()
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
    config.alpn_protocols = vec![crate::server::tls::ALPN_HTTP1.to_vec()];
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
