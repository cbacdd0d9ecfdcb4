//! Making certificates: a CA, the serving certificates it signs, and a CA read back from its files to sign
//! again. Nothing here touches the file system; `dir` and `dev` decide what goes where.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, DnsName};

use super::CertError;
use super::inspect::{self, CertInfo, rfc3339, unix_seconds};
use crate::pem::{self, PemError};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Backdating tolerates clocks that run a little behind ours (the API server's, a laptop's).
const BACKDATE: Duration = Duration::from_secs(60 * 60);
const CA_NAME: &str = "stage-guard CA";

/// Why the CA files of a directory cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Unreadable, not PEM, or a key that is not the certificate's (the messages name the files).
    #[error(transparent)]
    Files(#[from] PemError),
    #[error("{} is not a CA certificate (no basicConstraints CA:TRUE)", path.display())]
    NotACa { path: PathBuf },
    #[error("the CA in {} expired at {at}", path.display())]
    Expired { path: PathBuf, at: String },
    #[error("the CA in {} is not valid before {at} (is the clock right?)", path.display())]
    NotYetValid { path: PathBuf, at: String },
    #[error("{}: cannot sign with this key ({reason}); a PKCS#8 key is expected", path.display())]
    UnusableKey { path: PathBuf, reason: String },
}

/// A CA that can sign: its certificate and its key.
pub struct Ca {
    cert_pem: String,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

// The key stays out of logs and panic messages.
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A serving certificate and its key, PEM.
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub info: CertInfo,
    /// The CA ends before the usual lifetime, so the certificate ends with it.
    pub cut_to_ca: bool,
}

impl Ca {
    /// A new CA (ECDSA P-256, 10 years). Its name carries the time it was made and the start of its public
    /// key, so that two generations can be told apart in `openssl s_client` and in `certs`'s progress lines.
    pub fn generate(now: SystemTime) -> Result<Ca, CertError> {
        let key = new_key("CA key")?;
        // The first byte of an EC point says how it is encoded; the bytes after it are the key's own.
        let key_start: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "{CA_NAME} {} {key_start}",
                humantime::format_rfc3339_seconds(now)
            ),
        );
        set_validity(&mut params, now, now.checked_add(CA_VALIDITY))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(|cause| CertError::Generate {
                what: "CA certificate",
                cause,
            })?;
        let cert_pem = cert.pem();
        let info = reread("CA certificate", &cert_pem)?;
        Ok(Ca {
            cert_pem,
            info,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `cert_pem` (exactly one certificate, a CA, valid at `now`) with its key `key_pem`. The
    /// paths only name the files in errors.
    pub fn load(
        cert_path: &Path,
        cert_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        let info = inspect::read_single(cert_path, cert_pem)?;
        if !info.is_ca {
            return Err(CaError::NotACa {
                path: cert_path.to_owned(),
            });
        }
        // rustls compares the key's public half with the certificate's, and names both files if they differ.
        pem::parse_certified_key(cert_path, cert_pem, key_path, key_pem)?;
        let now_unix = unix_seconds(now);
        if now_unix < info.not_before_unix {
            return Err(CaError::NotYetValid {
                path: cert_path.to_owned(),
                at: rfc3339(info.not_before_unix),
            });
        }
        if now_unix >= info.not_after_unix {
            return Err(CaError::Expired {
                path: cert_path.to_owned(),
                at: rfc3339(info.not_after_unix),
            });
        }
        let unusable = |reason: String| CaError::UnusableKey {
            path: key_path.to_owned(),
            reason,
        };
        let key_text = std::str::from_utf8(key_pem).map_err(|e| unusable(e.to_string()))?;
        let key = KeyPair::from_pem(key_text).map_err(|e| unusable(e.to_string()))?;
        // The issuer's name and key identifier come from the certificate itself, so certificates it signs
        // chain to it whoever made it.
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(info.der()), key).map_err(|e| {
                CaError::Files(PemError::BadCertificate {
                    path: cert_path.to_owned(),
                    reason: e.to_string(),
                })
            })?;
        Ok(Ca {
            cert_pem: String::from_utf8_lossy(cert_pem).into_owned(),
            info,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// A serving certificate (serverAuth, one year, never past the CA's own end) on a new key. Each SAN is
    /// an IP SAN when it parses as an IP address, else a DNS SAN; the first SAN is also the subject CN.
    pub fn issue_serving(
        &self,
        sans: &[String],
        now: SystemTime,
    ) -> Result<ServingPair, CertError> {
        let subject_alt_names = parse_sans(sans)?;
        let common_name = sans.first().ok_or(CertError::NoSans)?;
        let full_term = now.checked_add(SERVING_VALIDITY).ok_or(CertError::Clock)?;
        let ca_end = inspect::system_time(self.info.not_after_unix).ok_or(CertError::Clock)?;
        let cut_to_ca = ca_end < full_term;
        let key = new_key("serving key")?;
        let mut params = leaf_params(now, Some(full_term.min(ca_end)), common_name)?;
        params.subject_alt_names = subject_alt_names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|cause| CertError::Generate {
                what: "serving certificate",
                cause,
            })?;
        let cert_pem = cert.pem();
        let info = reread("serving certificate", &cert_pem)?;
        Ok(ServingPair {
            cert_pem,
            key_pem: key.serialize_pem(),
            info,
            cut_to_ca,
        })
    }
}

/// A CA and a serving certificate it signed, all PEM: what `serve` makes for development and what tests use.
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

/// A new CA (ECDSA P-256, 10 years) and a serving certificate it signed (serverAuth, one year); each SAN
/// is an IP SAN when it parses as an IP address, else a DNS SAN, and the first is also the subject CN.
pub fn generate_bundle(sans: &[String]) -> Result<CertBundle, CertError> {
    generate_bundle_at(sans, SystemTime::now())
}

/// [`generate_bundle`] with validity counted from `now`; tests use it to make certificates near their end.
pub(super) fn generate_bundle_at(
    sans: &[String],
    now: SystemTime,
) -> Result<CertBundle, CertError> {
    // SANs first: a bad one should not cost a CA.
    parse_sans(sans)?;
    let ca = Ca::generate(now)?;
    let pair = ca.issue_serving(sans, now)?;
    Ok(CertBundle {
        ca_key_pem: ca.key_pem(),
        ca_cert_pem: ca.cert_pem,
        cert_pem: pair.cert_pem,
        key_pem: pair.key_pem,
    })
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

/// Each SAN as an IP or DNS SAN; the first invalid one is the error.
pub fn parse_sans(sans: &[String]) -> Result<Vec<SanType>, CertError> {
    sans.iter().map(|san| parse_san(san)).collect()
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

/// The facts of a certificate just made, read back the way every other certificate is read.
fn reread(what: &'static str, pem: &str) -> Result<CertInfo, CertError> {
    inspect::read_single(Path::new(what), pem.as_bytes()).map_err(|e| CertError::Reread {
        what,
        reason: e.to_string(),
    })
}

fn new_key(what: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|cause| CertError::Generate { what, cause })
}

/// Parameters common to the certificates a CA signs; the caller adds SANs and extended key usage.
fn leaf_params(
    now: SystemTime,
    not_after: Option<SystemTime>,
    common_name: &str,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // X.509 caps a CN at 64 characters; longer names live in the SANs alone, which is where clients look.
    if common_name.len() <= 64 {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
    }
    set_validity(&mut params, now, not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Sets notBefore (backdated) and notAfter. rcgen takes `time` dates; x509-parser (which already depends on
/// `time`) converts from unix seconds, so the crate needs no direct `time` dependency.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    not_after: Option<SystemTime>,
) -> Result<(), CertError> {
    let date = |t: Option<SystemTime>| {
        t.and_then(|t| x509_parser::time::ASN1Time::from_timestamp(unix_seconds(t)).ok())
            .map(|t| t.to_datetime())
            .ok_or(CertError::Clock)
    };
    params.not_before = date(now.checked_sub(BACKDATE))?;
    params.not_after = date(not_after)?;
    Ok(())
}

/// A client certificate (clientAuth) signed by `bundle`'s CA: the API server's side of mutual TLS in tests.
#[cfg(test)]
pub(crate) fn issue_client_cert(bundle: &CertBundle, common_name: &str) -> (String, String) {
    let now = SystemTime::now();
    let ca = Ca::load(
        Path::new("ca.crt"),
        bundle.ca_cert_pem.as_bytes(),
        Path::new("ca.key"),
        bundle.ca_key_pem.as_bytes(),
        now,
    )
    .unwrap();
    let key = new_key("client key").unwrap();
    let mut params = leaf_params(now, now.checked_add(SERVING_VALIDITY), common_name).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    #[tokio::test]
    async fn a_ca_read_back_from_its_files_signs_certificates_that_chain_to_it() {
        let first = generate_bundle(&sans(&["localhost"])).unwrap();
        let now = SystemTime::now();
        let ca = Ca::load(
            Path::new("ca.crt"),
            first.ca_cert_pem.as_bytes(),
            Path::new("ca.key"),
            first.ca_key_pem.as_bytes(),
            now,
        )
        .unwrap();
        let pair = ca.issue_serving(&sans(&["localhost"]), now).unwrap();
        assert!(!pair.cut_to_ca);
        assert_ne!(pair.cert_pem, first.cert_pem);
        let again = CertBundle {
            cert_pem: pair.cert_pem.clone(),
            key_pem: pair.key_pem,
            ..first.clone()
        };
        let server = serve(&again).await;
        let trusting_ca = client_config(&[&first.ca_cert_pem], None, BOTH_VERSIONS);
        let leaf = fetch_leaf(server.addr, trusting_ca, "localhost")
            .await
            .unwrap();
        assert_eq!(leaf, leaf_der(&pair.cert_pem));
        let ca_info = inspect::read_single(Path::new("ca"), first.ca_cert_pem.as_bytes()).unwrap();
        assert!(pair.info.signed_by(&ca_info));
        assert_eq!(pair.info.issuer, ca_info.subject);
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
            let cn = ca.subject().iter_common_name().next().unwrap();
            let cn = cn.as_str().unwrap();
            // "stage-guard CA 2026-05-13T10:15:00Z 1a2b3c4d"
            let words: Vec<&str> = cn.split(' ').collect();
            assert_eq!(words[..2], ["stage-guard", "CA"], "{cn}");
            assert!(humantime::parse_rfc3339(words[2]).is_ok(), "{cn}");
            assert_eq!(words[3].len(), 8, "{cn}");
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
    fn a_serving_certificate_never_outlives_its_ca() {
        // A CA made 10 years less 30 days ago: 30 days left.
        let made = SystemTime::now() - CA_VALIDITY + Duration::from_secs(30 * 86_400);
        let ca = Ca::generate(made).unwrap();
        let pair = ca
            .issue_serving(&sans(&["localhost"]), SystemTime::now())
            .unwrap();
        assert!(pair.cut_to_ca);
        assert_eq!(pair.info.not_after_unix, ca.info().not_after_unix);
    }

    #[test]
    fn loading_a_ca_refuses_what_cannot_sign() {
        let now = SystemTime::now();
        let load = |cert: &str, key: &str, at: SystemTime| {
            Ca::load(
                Path::new("d/ca.crt"),
                cert.as_bytes(),
                Path::new("d/ca.key"),
                key.as_bytes(),
                at,
            )
        };
        let b = generate_bundle(&sans(&["localhost"])).unwrap();
        let other = generate_bundle(&sans(&["localhost"])).unwrap();

        let error = load(&b.ca_cert_pem, &other.ca_key_pem, now).unwrap_err();
        assert!(
            matches!(error, CaError::Files(PemError::KeyMismatch { .. })),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "private key d/ca.key does not match the certificate in d/ca.crt"
        );

        let error = load(&b.cert_pem, &b.key_pem, now).unwrap_err();
        assert!(matches!(error, CaError::NotACa { .. }), "{error:?}");

        let error = load("not a certificate", &b.ca_key_pem, now).unwrap_err();
        assert!(
            matches!(error, CaError::Files(PemError::NoCertificate { .. })),
            "{error:?}"
        );

        let two = format!("{}{}", b.ca_cert_pem, other.ca_cert_pem);
        let error = load(&two, &b.ca_key_pem, now).unwrap_err();
        assert!(
            error.to_string().contains("holds 2 certificates"),
            "{error}"
        );

        let error = load(&b.ca_cert_pem, &b.ca_key_pem, now + CA_VALIDITY).unwrap_err();
        assert!(matches!(error, CaError::Expired { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("the CA in d/ca.crt expired at 20"),
            "{error}"
        );

        let error = load(&b.ca_cert_pem, &b.ca_key_pem, now - 2 * BACKDATE).unwrap_err();
        assert!(matches!(error, CaError::NotYetValid { .. }), "{error:?}");

        load(&b.ca_cert_pem, &b.ca_key_pem, now).unwrap();
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
}
