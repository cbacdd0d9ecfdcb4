//! CA and serving certificates: `stage-guard certs` and the development certificates `serve` makes when it
//! is given no cert files (SPEC 6).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, ServerName, UnixTime};

use crate::pem;

/// File names inside a certificate directory; the same names a `kubernetes.io/tls` Secret uses.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Backdating tolerates clocks that run a little behind ours (the API server's, a laptop's).
const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// Development certificates closer than this to their end are replaced rather than reused.
const DEV_RENEW_BEFORE: Duration = Duration::from_secs(24 * 60 * 60);
const CA_COMMON_NAME: &str = "stage-guard CA";

/// The Service `serve`'s development certificate is also valid for (deploy/ uses these names).
const DEV_SERVICE: &str = "stage-guard";
const DEV_NAMESPACE: &str = "stage-guard";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid subject alternative name {san:?}: neither an IP address nor a valid DNS name")]
    InvalidSan { san: String },
    #[error("no subject alternative names given")]
    NoSans,
    #[error("the system clock is outside the range certificates can express")]
    Clock,
    #[error("generating the {what}: {cause}")]
    Generate {
        what: &'static str,
        cause: rcgen::Error,
    },
    #[error("creating directory {}: {cause}", path.display())]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("writing {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A CA and a serving certificate it signed, all PEM.
#[derive(Clone)]
pub struct CertBundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

// Keys stay out of logs and panic messages.
impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// DNS names for a Service: NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new CA (ECDSA P-256, 10 years) and a serving certificate it signed (1 year, serverAuth). Each SAN is an
/// IP SAN when it parses as an IP address, else a DNS SAN; the first SAN is also the subject CN.
pub fn generate_bundle(sans: &[String]) -> Result<CertBundle, CertError> {
    generate_bundle_at(sans, SystemTime::now())
}

/// [`generate_bundle`] with validity counted from `now`; tests use it to make certificates near their end.
fn generate_bundle_at(sans: &[String], now: SystemTime) -> Result<CertBundle, CertError> {
    let subject_alt_names = sans
        .iter()
        .map(|san| parse_san(san))
        .collect::<Result<Vec<_>, _>>()?;
    let common_name = sans.first().ok_or(CertError::NoSans)?;

    let ca_key = new_key("CA key")?;
    let ca_params = ca_params(now)?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|cause| CertError::Generate {
            what: "CA certificate",
            cause,
        })?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = new_key("serving key")?;
    let mut params = leaf_params(now, common_name)?;
    params.subject_alt_names = subject_alt_names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|cause| CertError::Generate {
            what: "serving certificate",
            cause,
        })?;

    Ok(CertBundle {
        ca_cert_pem: ca_pem,
        ca_key_pem: issuer.key().serialize_pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `ca.crt`, `tls.crt`, `tls.key` (and `ca.key` when `include_ca_key`) into `dir`, creating it if
/// missing. Key files get mode 0600 on unix.
pub fn write_bundle(
    dir: &Path,
    bundle: &CertBundle,
    include_ca_key: bool,
) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|cause| CertError::CreateDir {
        path: dir.to_owned(),
        cause,
    })?;
    if include_ca_key {
        write_file(&dir.join(CA_KEY_FILE), &bundle.ca_key_pem, true)?;
    }
    write_file(&dir.join(CA_CERT_FILE), &bundle.ca_cert_pem, false)?;
    // Key before certificate: a reader that sees the new certificate also finds its key.
    write_file(&dir.join(KEY_FILE), &bundle.key_pem, true)?;
    write_file(&dir.join(CERT_FILE), &bundle.cert_pem, false)
}

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
    write_bundle(dir, &bundle, false)?;
    dev.generated = true;
    Ok(dev)
}

/// base64 (standard alphabet, no line breaks) of the CA PEM: a webhook configuration's `caBundle`.
pub fn ca_bundle_base64(ca_cert_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_cert_pem.as_bytes())
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

fn parse_san(san: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || CertError::InvalidSan {
        san: san.to_owned(),
    };
    // A wildcard is only meaningful as the whole leftmost label.
    let checked = san.strip_prefix("*.").unwrap_or(san);
    // A SAN dNSName carries no trailing root dot.
    if san.ends_with('.') || DnsName::try_from(checked).is_err() {
        return Err(invalid());
    }
    Ok(SanType::DnsName(san.try_into().map_err(|_| invalid())?))
}

fn new_key(what: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|cause| CertError::Generate { what, cause })
}

/// The CA's parameters. The subject is fixed so that tests can re-create an issuer from a bundle's CA key.
fn ca_params(now: SystemTime) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    set_validity(&mut params, now, CA_VALIDITY)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Parameters common to the certificates the CA signs; the caller adds SANs and extended key usage.
fn leaf_params(now: SystemTime, common_name: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // X.509 caps a CN at 64 characters; longer names live in the SANs alone, which is where clients look.
    if common_name.len() <= 64 {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
    }
    set_validity(&mut params, now, SERVING_VALIDITY)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Sets notBefore (backdated) and notAfter. rcgen takes `time` dates; x509-parser (which already depends on
/// `time`) converts from unix seconds, so the crate needs no direct `time` dependency.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    lifetime: Duration,
) -> Result<(), CertError> {
    let date = |t: Option<SystemTime>| {
        t.and_then(|t| x509_parser::time::ASN1Time::from_timestamp(unix_seconds(t)).ok())
            .map(|t| t.to_datetime())
            .ok_or(CertError::Clock)
    };
    params.not_before = date(now.checked_sub(BACKDATE))?;
    params.not_after = date(now.checked_add(lifetime))?;
    Ok(())
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let error = |cause| CertError::Write {
        path: path.to_owned(),
        cause,
    };
    // Write a sibling and rename it into place, so a reader never sees a half-written file.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(error)?;
    // `mode` applies only to new files; a leftover temporary file may have other permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(if private {
            0o600
        } else {
            0o644
        }))
        .map_err(error)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(error)
}

/// A client certificate (clientAuth) signed by `bundle`'s CA: the API server's side of mutual TLS in tests.
#[cfg(test)]
pub(crate) fn issue_client_cert(bundle: &CertBundle, common_name: &str) -> (String, String) {
    let now = SystemTime::now();
    let ca_key = KeyPair::from_pem(&bundle.ca_key_pem).unwrap();
    let issuer = Issuer::new(ca_params(now).unwrap(), ca_key);
    let key = new_key("client key").unwrap();
    let mut params = leaf_params(now, common_name).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::pem::parse_certified_key;
    use crate::server::reload::ReloadingCertResolver;
    use crate::server::tls::server_config;
    use crate::test_tls::*;

    fn sans(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn unix_now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    async fn serve(bundle: &CertBundle) -> EchoServer {
        let loaded = parse_certified_key(
            Path::new("tls.crt"),
            bundle.cert_pem.as_bytes(),
            Path::new("tls.key"),
            bundle.key_pem.as_bytes(),
        )
        .unwrap();
        let resolver = Arc::new(ReloadingCertResolver::new(loaded));
        spawn_echo_server(server_config(resolver, None).unwrap()).await
    }

    fn with_parsed<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = leaf_der(pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        f(&cert)
    }

    #[test]
    fn service_dns_names_cover_every_in_cluster_form() {
        assert_eq!(
            service_dns_names("hook", "ops"),
            [
                "hook",
                "hook.ops",
                "hook.ops.svc",
                "hook.ops.svc.cluster.local"
            ]
        );
    }

    #[tokio::test]
    async fn serving_cert_verifies_under_its_ca_for_every_san() {
        let names = service_dns_names("stage-guard", "stage-guard");
        let mut all = names.clone();
        all.extend(sans(&["localhost", "127.0.0.1", "::1"]));
        let bundle = generate_bundle(&all).unwrap();
        let server = serve(&bundle).await;
        let trusting_ca = client_config(&[&bundle.ca_cert_pem], None, BOTH_VERSIONS);

        for name in ["stage-guard.stage-guard.svc", "localhost", "127.0.0.1"]
            .into_iter()
            .chain(names.iter().map(String::as_str))
        {
            let leaf = fetch_leaf(server.addr, trusting_ca.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(leaf, leaf_der(&bundle.cert_pem), "{name}");
        }
        // ::1 is a SAN too; the server listens on 127.0.0.1 but the name checked is the one requested.
        fetch_leaf(server.addr, trusting_ca.clone(), "::1")
            .await
            .unwrap();

        assert!(
            fetch_leaf(server.addr, trusting_ca, "other.example")
                .await
                .is_err(),
            "a name outside the SANs was accepted"
        );
        let other = generate_bundle(&all).unwrap();
        let trusting_other_ca = client_config(&[&other.ca_cert_pem], None, BOTH_VERSIONS);
        assert!(
            fetch_leaf(server.addr, trusting_other_ca, "localhost")
                .await
                .is_err(),
            "a client trusting another CA accepted the certificate"
        );
    }

    #[test]
    fn generated_certificates_have_the_promised_shape() {
        let bundle = generate_bundle(&sans(&["hook.ops.svc", "10.0.0.7", "hook"])).unwrap();
        let now = unix_now();

        with_parsed(&bundle.ca_cert_pem, |ca| {
            let constraints = ca.basic_constraints().unwrap().unwrap().value;
            assert!(constraints.ca);
            assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
            let remaining = ca.validity().not_after.timestamp() - now;
            assert!(
                (remaining - 3650 * 86_400).abs() < 86_400,
                "CA lasts {remaining} s"
            );
            assert_eq!(
                ca.public_key().algorithm.algorithm,
                x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
            );
        });
        with_parsed(&bundle.cert_pem, |leaf| {
            assert!(!leaf.is_ca());
            assert!(
                leaf.extended_key_usage()
                    .unwrap()
                    .unwrap()
                    .value
                    .server_auth
            );
            let cn = leaf.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), "hook.ops.svc");
            let remaining = leaf.validity().not_after.timestamp() - now;
            assert!((remaining - 365 * 86_400).abs() < 86_400, "{remaining}");
            let names = &leaf
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names;
            assert_eq!(names.len(), 3);
            assert!(matches!(names[0], GeneralName::DNSName("hook.ops.svc")));
            assert!(matches!(names[1], GeneralName::IPAddress(&[10, 0, 0, 7])));
            assert!(matches!(names[2], GeneralName::DNSName("hook")));
        });
    }

    #[test]
    fn invalid_dns_names_are_refused() {
        for bad in [
            "",
            "bad name",
            "-lead.example",
            "trail-.example",
            "a..b",
            "ünï.example",
            "x/y",
        ] {
            let error = generate_bundle(&sans(&["localhost", bad])).unwrap_err();
            assert!(
                matches!(&error, CertError::InvalidSan { san } if san == bad),
                "{bad:?}: {error:?}"
            );
        }
        assert!(matches!(generate_bundle(&[]), Err(CertError::NoSans)));
        // A wildcard as the leftmost label is a legitimate SAN.
        generate_bundle(&sans(&["*.stage-guard.svc"])).unwrap();
    }

    #[test]
    fn write_bundle_writes_the_ca_key_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = generate_bundle(&sans(&["localhost"])).unwrap();
        let without = dir.path().join("without/nested");
        let with = dir.path().join("with");

        write_bundle(&without, &bundle, false).unwrap();
        write_bundle(&with, &bundle, true).unwrap();

        assert!(!without.join(CA_KEY_FILE).exists());
        assert_eq!(
            fs::read_to_string(with.join(CA_KEY_FILE)).unwrap(),
            bundle.ca_key_pem
        );
        for dir in [&without, &with] {
            assert_eq!(
                fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap(),
                bundle.ca_cert_pem
            );
            assert_eq!(
                fs::read_to_string(dir.join(CERT_FILE)).unwrap(),
                bundle.cert_pem
            );
            assert_eq!(
                fs::read_to_string(dir.join(KEY_FILE)).unwrap(),
                bundle.key_pem
            );
            let leftovers: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(with.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(with.join(KEY_FILE)), 0o600);
            assert_eq!(mode(without.join(KEY_FILE)), 0o600);
            assert_eq!(mode(with.join(CERT_FILE)), 0o644);
        }
    }

    #[test]
    fn write_bundle_names_the_path_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "not a directory").unwrap();
        let bundle = generate_bundle(&sans(&["localhost"])).unwrap();
        let error = write_bundle(&blocker.join("certs"), &bundle, false).unwrap_err();
        assert!(matches!(error, CertError::CreateDir { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&*blocker.to_string_lossy()),
            "{error}"
        );
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
        write_bundle(dir.path(), &old, false).unwrap();

        let dev = ensure_dev_certs(dir.path()).unwrap();

        assert!(dev.generated);
        let pem = fs::read_to_string(&dev.cert_path).unwrap();
        assert_ne!(pem, old.cert_pem);
        let remaining = with_parsed(&pem, |c| c.validity().not_after.timestamp()) - unix_now();
        assert!(remaining > 300 * 86_400, "{remaining}");
    }

    #[test]
    fn ca_bundle_is_single_line_base64_of_the_pem() {
        let bundle = generate_bundle(&sans(&["localhost"])).unwrap();
        let encoded = ca_bundle_base64(&bundle.ca_cert_pem);
        assert!(!encoded.contains('\n'));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap();
        assert_eq!(decoded, bundle.ca_cert_pem.as_bytes());
    }
}
