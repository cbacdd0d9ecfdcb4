//! Certificates (SPEC 6): the CA and serving pair that `stage-guard certs` keeps in a directory and rotates
//! without a failed request (`dir`, told to the operator by `progress`), and the development certificates
//! `serve` makes when it is given no cert files (`dev`). `issue` makes certificates, `inspect` reads them
//! back, `files` writes them.

use std::path::PathBuf;

use base64::Engine as _;

mod dev;
mod dir;
mod files;
mod inspect;
mod issue;
mod progress;

pub use dev::{DevCerts, ensure_dev_certs};
pub use dir::{DirError, Outcome, Step, run_step};
pub use inspect::CertInfo;
pub use issue::{CaError, CertBundle, generate_bundle, service_dns_names};
pub use progress::Done;

#[cfg(test)]
pub(crate) use issue::issue_client_cert;

/// File names inside a certificate directory; `tls.crt`/`tls.key` are the keys of a `kubernetes.io/tls`
/// Secret, `ca-bundle` is what the static-certs overlay copies into the webhook configurations.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA being retired while a CA rotation is in progress: still trusted, no longer signing.
pub const PREVIOUS_CA_CERT_FILE: &str = "ca-previous.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_BUNDLE_FILE: &str = "ca-bundle";

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
    #[error("reading back the {what} just made: {reason}")]
    Reread { what: &'static str, reason: String },
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
    #[error("removing {}: {cause}", path.display())]
    Remove {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl CertError {
    /// A failure of the file system rather than of the input (exit code 1 rather than 2).
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            CertError::CreateDir { .. } | CertError::Write { .. } | CertError::Remove { .. }
        )
    }
}

/// base64 (standard alphabet, no line breaks) of one or more PEM certificates: a webhook configuration's
/// `caBundle`.
pub fn ca_bundle_base64(pem: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_is_single_line_base64_of_the_pem() {
        let bundle = generate_bundle(&["localhost".to_owned()]).unwrap();
        let encoded = ca_bundle_base64(&bundle.ca_cert_pem);
        assert!(!encoded.contains('\n'));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .unwrap();
        assert_eq!(decoded, bundle.ca_cert_pem.as_bytes());
    }
}
