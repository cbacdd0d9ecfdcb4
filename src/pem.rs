//! TLS material from files: PEM certificate chains and private keys into rustls types, checked to
//! belong together, and the one crypto provider every rustls builder gets. Used by the server (the
//! serving pair, the client CA) and by `certs` (development certificates before reuse, a CA and its key).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
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
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<LoadedCert, PemError> {
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
) -> Result<LoadedCert, PemError> {
    let chain = parse_certificates(cert_path, cert_pem)?;
    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(PemError::NoPrivateKey {
                path: key_path.to_owned(),
            });
        }
        Err(cause) => {
            return Err(PemError::Pem {
                path: key_path.to_owned(),
                cause,
            });
        }
    };

    let not_after_unix = {
        let leaf = chain.first().ok_or_else(|| PemError::NoCertificate {
            path: cert_path.to_owned(),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| PemError::BadCertificate {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })?;
        parsed.validity().not_after.timestamp()
    };

    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|cause| PemError::UnusableKey {
            path: key_path.to_owned(),
            cause,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(PemError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(e) => {
            return Err(PemError::BadCertificate {
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

pub(crate) fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| PemError::Pem {
            path: path.to_owned(),
            cause,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| read_error(path, e))
}

pub(crate) fn read_error(path: &Path, cause: io::Error) -> PemError {
    match cause.kind() {
        io::ErrorKind::NotFound => PemError::Missing {
            path: path.to_owned(),
        },
        _ => PemError::Read {
            path: path.to_owned(),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::certs::{self, CertBundle};
    use crate::test_tls::leaf_der;

    fn bundle(san: &str) -> CertBundle {
        certs::generate_bundle(&[san.to_owned()]).unwrap()
    }

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
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

        assert!(matches!(error, PemError::KeyMismatch { .. }), "{error:?}");
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

        fn variant(error: &PemError) -> &'static str {
            match error {
                PemError::Missing { .. } => "Missing",
                PemError::NoCertificate { .. } => "NoCertificate",
                PemError::NoPrivateKey { .. } => "NoPrivateKey",
                PemError::Pem { .. } => "Pem",
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
}
