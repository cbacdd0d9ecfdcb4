//! TLS for the webhook listener (SPEC 5): the rustls server configuration (TLS 1.2 and 1.3, ALPN
//! `http/1.1`, optional client certificates) and a bounded handshake. The serving pair comes from
//! [`crate::pem`] and is swapped by [`super::reload`].
//!
//! Only the ring provider is used, passed explicitly to every builder, so no process-wide default provider
//! has to be installed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use super::reload::ReloadingCertResolver;
use crate::pem::{PemError, crypto_provider, parse_certificates, read_file};

/// The only application protocol the webhook speaks; the API server sends HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the webhook listener's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("bad client CA {}: {reason}", path.display())]
    BadClientCa { path: PathBuf, reason: String },
    #[error("building the TLS server configuration: {0}")]
    Config(rustls::Error),
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::certs::{self, CertBundle};
    use crate::pem::parse_certified_key;
    use crate::test_tls::*;

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
