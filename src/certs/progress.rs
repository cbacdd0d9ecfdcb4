//! What `stage-guard certs` did, and what the operator applies and waits for next: the progress lines it
//! prints on stderr (README "Certificates and rotation" tells the same story at length).

use std::path::Path;

use super::inspect::{CertInfo, rfc3339};
use super::{CA_BUNDLE_FILE, CA_CERT_FILE, PREVIOUS_CA_CERT_FILE};

/// The one apply command of the static-certs overlay, as the README documents it.
const APPLY: &str = "kubectl apply -k deploy/overlays/static-certs";

/// What one run of `stage-guard certs` did to its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// No CA in the directory: a new CA and a serving certificate it signed.
    FirstCa { ca: CertInfo, serving: CertInfo },
    /// A new serving certificate from the CA already there; the caBundle is unchanged.
    ServingRenewed {
        ca: CertInfo,
        serving: CertInfo,
        cut_to_ca: bool,
    },
    /// CA rotation, step 1: a new CA beside the previous one, both trusted; the serving pair unchanged.
    RotationStarted { ca: CertInfo, previous: CertInfo },
    /// CA rotation, step 2: a serving certificate from the new CA; both CAs still trusted.
    RotationServing {
        ca: CertInfo,
        serving: CertInfo,
        cut_to_ca: bool,
    },
    /// CA rotation, step 3: the previous CA dropped from the caBundle.
    RotationFinished { ca: CertInfo, dropped: CertInfo },
}

impl Done {
    /// Lines for stderr: what was made, then what to apply and what to wait for.
    pub fn progress(&self, dir: &Path, sans: &[String]) -> Vec<String> {
        let dir = dir.display();
        let serving_line = |serving: &CertInfo| {
            format!(
                "serial {}, valid until {}; SANs: {}",
                serving.serial,
                rfc3339(serving.not_after_unix),
                sans.join(", ")
            )
        };
        let wait_for_pods = |serving: &CertInfo| {
            format!(
                "wait until every pod serves it (kubelet updates the mounted Secret within about a minute, \
                 stage-guard reloads it within seconds): stage_guard_tls_reloads_total{{result=\"success\"}} \
                 goes up and stage_guard_tls_cert_not_after_timestamp_seconds reads {} on each pod's admin \
                 port, and openssl s_client shows serial={}",
                serving.not_after_unix, serving.serial
            )
        };
        let mut lines = match self {
            Done::FirstCa { ca, serving } => vec![
                format!(
                    "made a new CA ({}, valid until {}) and a serving certificate it signed ({}) in {dir}",
                    ca.subject,
                    rfc3339(ca.not_after_unix),
                    serving_line(serving)
                ),
                format!(
                    "next: apply ({APPLY}); the caBundle is in {dir}/{CA_BUNDLE_FILE} and on stdout"
                ),
            ],
            Done::ServingRenewed { ca, serving, .. } => vec![
                format!(
                    "issued a new serving certificate ({}) signed by the CA in {dir} ({}); the caBundle is unchanged",
                    serving_line(serving),
                    ca.subject
                ),
                format!("next: apply ({APPLY}); {}", wait_for_pods(serving)),
            ],
            Done::RotationStarted { ca, previous } => vec![
                format!(
                    "CA rotation, step 1 of 3: made a new CA ({}, valid until {}) in {dir}/{CA_CERT_FILE} and \
                     ca.key; the previous CA ({}) stays trusted from {dir}/{PREVIOUS_CA_CERT_FILE}, its key is no \
                     longer needed; the serving certificate is unchanged; the caBundle holds both CAs",
                    ca.subject,
                    rfc3339(ca.not_after_unix),
                    previous.subject
                ),
                format!(
                    "next: apply ({APPLY}) so that the API server trusts both CAs, then run this command \
                     without --new-ca (step 2)"
                ),
            ],
            Done::RotationServing { ca, serving, .. } => vec![
                format!(
                    "CA rotation, step 2 of 3: issued a serving certificate ({}) signed by the new CA ({}); the \
                     caBundle still holds both CAs",
                    serving_line(serving),
                    ca.subject
                ),
                format!(
                    "next: apply ({APPLY}); {}; then run this command with --drop-old-ca (step 3)",
                    wait_for_pods(serving)
                ),
            ],
            Done::RotationFinished { ca, dropped } => vec![
                format!(
                    "CA rotation, step 3 of 3: removed {dir}/{PREVIOUS_CA_CERT_FILE} ({}); the caBundle holds the \
                     new CA ({}) only",
                    dropped.subject, ca.subject
                ),
                format!("next: apply ({APPLY}); the CA rotation is then complete"),
            ],
        };
        if let Done::ServingRenewed {
            ca,
            cut_to_ca: true,
            ..
        }
        | Done::RotationServing {
            ca,
            cut_to_ca: true,
            ..
        } = self
        {
            lines.push(format!(
                "warning: the CA ({}) ends at {}, within a year: the serving certificate ends with it; replace \
                 the CA before then (--new-ca starts a CA rotation)",
                ca.subject,
                rfc3339(ca.not_after_unix)
            ));
        }
        lines
    }
}
