//! Reading certificates back: the facts `certs` checks and reports (who signed what, until when).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pem::{PemError, parse_certificates};

/// What `certs` needs to know about one certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as `openssl x509 -subject` would show it, for example `CN=stage-guard CA 2026-…Z`.
    pub subject: String,
    pub issuer: String,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub is_ca: bool,
    der: Vec<u8>,
}

impl std::fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertInfo")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_after", &rfc3339(self.not_after_unix))
            .field("is_ca", &self.is_ca)
            .finish()
    }
}

impl CertInfo {
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether `ca` signed this certificate: its issuer is the CA's subject and the CA's key verifies its
    /// signature. (Validity and names are the verifier's business; this answers "which CA".)
    pub fn signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, ca_cert))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return false;
        };
        cert.issuer().as_raw() == ca_cert.subject().as_raw()
            && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
    }
}

/// The one certificate in `pem`; `path` names the file in errors.
pub fn read_single(path: &Path, pem: &[u8]) -> Result<CertInfo, PemError> {
    let mut all = read_all(path, pem)?;
    if all.len() != 1 {
        return Err(PemError::BadCertificate {
            path: path.to_owned(),
            reason: format!("holds {} certificates; expected one", all.len()),
        });
    }
    Ok(all.remove(0))
}

/// The first certificate in `pem` (the leaf of a chain).
pub fn read_leaf(path: &Path, pem: &[u8]) -> Result<CertInfo, PemError> {
    let mut all = read_all(path, pem)?;
    Ok(all.remove(0))
}

/// Every certificate in `pem`, at least one.
pub fn read_all(path: &Path, pem: &[u8]) -> Result<Vec<CertInfo>, PemError> {
    parse_certificates(path, pem)?
        .iter()
        .map(|der| {
            let (_, cert) =
                X509Certificate::from_der(der).map_err(|e| PemError::BadCertificate {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            let validity = cert.validity();
            Ok(CertInfo {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                serial: openssl_serial(cert.raw_serial()),
                not_before_unix: validity.not_before.timestamp(),
                not_after_unix: validity.not_after.timestamp(),
                is_ca: cert.is_ca(),
                der: der.to_vec(),
            })
        })
        .collect()
}

/// The serial's DER bytes as openssl prints them: upper-case hex without the zero byte that keeps a
/// DER integer positive.
fn openssl_serial(raw: &[u8]) -> String {
    let significant = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    significant.iter().map(|b| format!("{b:02X}")).collect()
}

pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub fn system_time(unix: i64) -> Option<SystemTime> {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(unix.unsigned_abs())),
    }
}

/// `2026-05-13T10:15:00Z`, or the number of seconds when the time cannot be shown that way.
pub fn rfc3339(unix: i64) -> String {
    system_time(unix)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| format!("{unix} (unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::generate_bundle;

    fn bundle() -> crate::certs::CertBundle {
        generate_bundle(&["localhost".to_owned()]).unwrap()
    }

    #[test]
    fn signed_by_tells_which_ca_signed_a_certificate() {
        let (a, b) = (bundle(), bundle());
        let info = |pem: &str| read_single(Path::new("x"), pem.as_bytes()).unwrap();
        let (leaf_a, ca_a, ca_b) = (
            info(&a.cert_pem),
            info(&a.ca_cert_pem),
            info(&b.ca_cert_pem),
        );

        assert!(leaf_a.signed_by(&ca_a));
        assert!(!leaf_a.signed_by(&ca_b));
        assert!(ca_a.signed_by(&ca_a), "a root signs itself");
        assert!(!ca_a.signed_by(&leaf_a));
        assert!(ca_a.is_ca && !leaf_a.is_ca);
        assert_eq!(leaf_a.issuer, ca_a.subject);
        assert!(
            leaf_a.subject.contains("CN=localhost"),
            "{}",
            leaf_a.subject
        );
        assert!(
            leaf_a.serial.len() >= 2
                && leaf_a
                    .serial
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
            "{}",
            leaf_a.serial
        );
    }

    #[test]
    fn read_single_wants_exactly_one_certificate() {
        let (a, b) = (bundle(), bundle());
        let two = format!("{}{}", a.cert_pem, b.ca_cert_pem);
        let error = read_single(Path::new("two.crt"), two.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "two.crt: invalid certificate: holds 2 certificates; expected one"
        );
        assert_eq!(
            read_leaf(Path::new("two.crt"), two.as_bytes()).unwrap(),
            read_single(Path::new("a"), a.cert_pem.as_bytes()).unwrap()
        );
        assert!(matches!(
            read_single(Path::new("empty"), b""),
            Err(PemError::NoCertificate { .. })
        ));
    }

    #[test]
    fn serials_read_as_openssl_prints_them() {
        assert_eq!(openssl_serial(&[0x00, 0x9f, 0x0a]), "9F0A");
        assert_eq!(openssl_serial(&[0x7f, 0x00]), "7F00");
        assert_eq!(openssl_serial(&[0x00]), "00");
    }

    #[test]
    fn times_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(42)), 42);
        assert_eq!(system_time(42), Some(UNIX_EPOCH + Duration::from_secs(42)));
    }
}
