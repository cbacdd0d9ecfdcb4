//! Development certificates: what `serve` makes when it is given no cert files (SPEC 6), reused while they
//! still serve. The CA key is not kept: a development CA never signs again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::files::{self, Access, Change};
use super::inspect::unix_seconds;
use super::issue::{CertBundle, generate_bundle, service_dns_names};
use super::{CA_CERT_FILE, CERT_FILE, CertError, KEY_FILE};
use crate::pem;

/// Development certificates closer than this to their end are replaced rather than reused.
const DEV_RENEW_BEFORE: Duration = Duration::from_secs(24 * 60 * 60);
/// The Service `serve`'s development certificate is also valid for (deploy/ uses these names).
const DEV_SERVICE: &str = "stage-guard";
const DEV_NAMESPACE: &str = "stage-guard";

/// Development certificates for `serve` without cert files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// False when usable files from an earlier run were reused.
    pub generated: bool,
}

/// Reuses `ca.crt`, `tls.crt`, `tls.key` in `dir` when they load as a matching pair, chain to the CA for
/// `localhost` and stay valid for more than 24 h; otherwise generates new ones (SANs localhost, 127.0.0.1, ::1
/// and the `stage-guard` Service names) and writes them without the CA key.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, CertError> {
    let mut dev = DevCerts {
        ca_path: dir.join(CA_CERT_FILE),
        cert_path: dir.join(CERT_FILE),
        key_path: dir.join(KEY_FILE),
        generated: false,
    };
    match reusable(&dev) {
        Ok(()) => return Ok(dev),
        // A first run finds nothing; only replacing files someone may have looked at is worth telling.
        Err(reason) if dev.cert_path.exists() => tracing::info!(
            dir = %dir.display(),
            reason = %reason,
            "replacing development certificates"
        ),
        Err(_) => {}
    }
    let bundle = generate_bundle(&dev_sans())?;
    write_dev_files(dir, &bundle)?;
    dev.generated = true;
    Ok(dev)
}

/// `ca.crt`, `tls.key`, `tls.crt`, in that order: a reader that sees the new certificate also finds its key.
fn write_dev_files(dir: &Path, bundle: &CertBundle) -> Result<(), CertError> {
    files::apply(
        dir,
        &[
            Change::write(
                dir.join(CA_CERT_FILE),
                bundle.ca_cert_pem.as_str(),
                Access::Public,
            ),
            Change::write(dir.join(KEY_FILE), bundle.key_pem.as_str(), Access::Private),
            Change::write(
                dir.join(CERT_FILE),
                bundle.cert_pem.as_str(),
                Access::Public,
            ),
        ],
    )
}

fn dev_sans() -> Vec<String> {
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    sans.extend(service_dns_names(DEV_SERVICE, DEV_NAMESPACE));
    sans
}

/// Why the development files in place cannot serve, if they cannot.
fn reusable(dev: &DevCerts) -> Result<(), String> {
    let loaded =
        pem::load_certified_key(&dev.cert_path, &dev.key_path).map_err(|e| e.to_string())?;
    let renew_at = unix_seconds(SystemTime::now() + DEV_RENEW_BEFORE);
    if loaded.not_after_unix <= renew_at {
        return Err(format!(
            "{} expires within 24 hours",
            dev.cert_path.display()
        ));
    }
    let ca_pem =
        fs::read(&dev.ca_path).map_err(|e| format!("reading {}: {e}", dev.ca_path.display()))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&ca_pem) {
        let ca = ca.map_err(|e| format!("{}: {e}", dev.ca_path.display()))?;
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", dev.ca_path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", dev.ca_path.display()));
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), pem::crypto_provider())
            .build()
            .map_err(|e| e.to_string())?;
    let Some((leaf, intermediates)) = loaded.key.cert.split_first() else {
        return Err(format!("{}: no certificate", dev.cert_path.display()));
    };
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &ServerName::try_from("localhost").map_err(|e| e.to_string())?,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            format!(
                "{} is not valid for localhost under {}: {e}",
                dev.cert_path.display(),
                dev.ca_path.display()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::certs::CA_KEY_FILE;
    use crate::certs::issue::generate_bundle_at;
    use crate::pem::parse_certified_key;
    use crate::test_tls::leaf_der;

    const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    fn unix_now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    fn with_parsed<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = leaf_der(pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        f(&cert)
    }

    fn read_all(dev: &DevCerts) -> [Vec<u8>; 3] {
        [&dev.ca_path, &dev.cert_path, &dev.key_path].map(|p| fs::read(p).unwrap())
    }

    #[test]
    fn dev_certs_are_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs/dev");

        let first = ensure_dev_certs(&certs_dir).unwrap();
        assert!(first.generated);
        assert_eq!(first.ca_path, certs_dir.join("ca.crt"));
        assert_eq!(first.cert_path, certs_dir.join("tls.crt"));
        assert_eq!(first.key_path, certs_dir.join("tls.key"));
        assert!(
            !certs_dir.join(CA_KEY_FILE).exists(),
            "the dev CA key must not be kept"
        );
        let bytes = read_all(&first);

        let second = ensure_dev_certs(&certs_dir).unwrap();
        assert!(!second.generated);
        assert_eq!(read_all(&second), bytes, "reused files were rewritten");

        let cert_pem = String::from_utf8(bytes[1].clone()).unwrap();
        with_parsed(&cert_pem, |leaf| {
            let names = &leaf
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names;
            let mut dns: Vec<String> = names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect();
            dns.sort();
            let mut expected = service_dns_names("stage-guard", "stage-guard");
            expected.push("localhost".into());
            expected.sort();
            assert_eq!(dns, expected);
            let ips: Vec<_> = names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::IPAddress(ip) => Some(ip.to_vec()),
                    _ => None,
                })
                .collect();
            assert!(ips.contains(&vec![127, 0, 0, 1]));
            assert!(ips.contains(&std::net::Ipv6Addr::LOCALHOST.octets().to_vec()));
        });
    }

    #[test]
    fn dev_certs_are_regenerated_when_the_key_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let before = read_all(&first);
        fs::write(
            &first.key_path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();

        let again = ensure_dev_certs(dir.path()).unwrap();

        assert!(again.generated);
        let after = read_all(&again);
        assert_ne!(after[1], before[1], "certificate not replaced");
        parse_certified_key(&again.cert_path, &after[1], &again.key_path, &after[2]).unwrap();
    }

    #[test]
    fn dev_certs_are_regenerated_when_they_do_not_belong_together() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        let stranger = generate_bundle(&dev_sans()).unwrap();
        // A matching pair, but not signed by the ca.crt beside it.
        fs::write(&first.cert_path, &stranger.cert_pem).unwrap();
        fs::write(&first.key_path, &stranger.key_pem).unwrap();

        let again = ensure_dev_certs(dir.path()).unwrap();

        assert!(again.generated);
        assert_ne!(
            fs::read_to_string(&again.cert_path).unwrap(),
            stranger.cert_pem
        );
    }

    #[test]
    fn dev_certs_are_regenerated_when_expiring_within_a_day() {
        let dir = tempfile::tempdir().unwrap();
        // Issued a year ago less 12 hours: 12 hours left.
        let issued = SystemTime::now() - SERVING_VALIDITY + Duration::from_secs(12 * 3600);
        let old = generate_bundle_at(&dev_sans(), issued).unwrap();
        write_dev_files(dir.path(), &old).unwrap();

        let dev = ensure_dev_certs(dir.path()).unwrap();

        assert!(dev.generated);
        let pem = fs::read_to_string(&dev.cert_path).unwrap();
        assert_ne!(pem, old.cert_pem);
        let remaining = with_parsed(&pem, |c| c.validity().not_after.timestamp()) - unix_now();
        assert!(remaining > 300 * 86_400, "{remaining}");
    }
}
