//! The directory of `stage-guard certs --out DIR`: which step of a rotation it is in, what each command may
//! do from there, and the files it changes (README "Certificates and rotation").
//!
//! DIR holds `ca.crt`/`ca.key` (the CA that signs), `tls.crt`/`tls.key` (the serving pair), `ca-bundle`
//! (the base64 caBundle the static-certs overlay applies) and, while a CA rotation is in progress,
//! `ca-previous.crt` (the CA being retired: still trusted, no longer signing). The caBundle is always the
//! CA, then the previous CA if any, so that the API server trusts whatever pods may serve at each step:
//!
//! | step                    | CA signs | pods serve (before / after the Secret update) | caBundle       |
//! |-------------------------|----------|-----------------------------------------------|----------------|
//! | `certs`                 | A        | A / A                                         | A              |
//! | `certs --new-ca`        | B        | A / A (not re-issued)                         | B, A           |
//! | `certs` (step 2)        | B        | A / B                                         | B, A           |
//! | `certs --drop-old-ca`   | B        | B / B (refused otherwise)                     | B              |

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::files::{self, Access, Change};
use super::inspect::{self, CertInfo};
use super::issue::{Ca, CaError, parse_sans};
use super::progress::Done;
use super::{
    CA_BUNDLE_FILE, CA_CERT_FILE, CA_KEY_FILE, CERT_FILE, CertError, KEY_FILE,
    PREVIOUS_CA_CERT_FILE, ca_bundle_base64,
};
use crate::pem::PemError;

/// What `stage-guard certs` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Issue a serving certificate from the CA in DIR (making the CA first when there is none).
    Serving,
    /// Start a CA rotation: a new CA, the current one kept as the previous CA.
    NewCa,
    /// Finish a CA rotation: forget the previous CA.
    DropOldCa,
}

/// What a run did, and the caBundle to apply.
#[derive(Debug)]
pub struct Outcome {
    pub done: Done,
    /// The CA certificates the webhook configurations must trust, PEM, newest first.
    pub ca_bundle_pem: Vec<u8>,
}

impl Outcome {
    pub fn ca_bundle_base64(&self) -> String {
        ca_bundle_base64(&self.ca_bundle_pem)
    }
}

/// Why a step cannot be taken from the state DIR is in. Each message says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("reading {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "{} is missing beside {}: restore it, or replace the CA with --new-ca (step 1 of a CA rotation, which needs only ca.crt)",
        key.display(), cert.display()
    )]
    MissingCaKey { cert: PathBuf, key: PathBuf },
    #[error(
        "{} is missing beside {}: restore it (it is in the webhook configurations' caBundle); a CA is never replaced silently",
        cert.display(), key.display()
    )]
    MissingCaCert { cert: PathBuf, key: PathBuf },
    #[error("{cause}; {}", ca_advice(cause))]
    UnusableCa { cause: CaError },
    #[error(transparent)]
    Unreadable(#[from] PemError),
    #[error("{} is not a CA certificate (no basicConstraints CA:TRUE)", path.display())]
    NotACa { path: PathBuf },
    #[error(
        "no CA to replace: {} is missing; run without --new-ca to make the first one",
        cert.display()
    )]
    NoCaToReplace { cert: PathBuf },
    #[error(
        "a CA rotation is in progress ({} exists): finish it first (this command without --new-ca, then with --drop-old-ca)",
        previous.display()
    )]
    RotationInProgress { previous: PathBuf },
    #[error(
        "{} is not signed by the CA in {}: once that CA is replaced, pods serving it would not be trusted; run this command without --new-ca first, apply, and wait until every pod serves the new certificate",
        serving.display(), ca.display()
    )]
    ServingNotFromCurrentCa { serving: PathBuf, ca: PathBuf },
    #[error(
        "no CA rotation in progress ({} is missing): nothing to drop",
        previous.display()
    )]
    NothingToDrop { previous: PathBuf },
    #[error(
        "{} exists but {} is missing: restore the new CA's ca.crt and ca.key before going on",
        previous.display(), cert.display()
    )]
    PreviousWithoutCa { previous: PathBuf, cert: PathBuf },
    #[error(
        "{} is missing: run this command without --drop-old-ca first (step 2 of the CA rotation)",
        serving.display()
    )]
    NoServingCert { serving: PathBuf },
    #[error(
        "{} is not signed by the new CA in {}: dropping the previous CA now would break every request; run this command without --drop-old-ca (step 2), apply, wait until every pod serves the new certificate, then drop",
        serving.display(), ca.display()
    )]
    ServingNotFromNewCa { serving: PathBuf, ca: PathBuf },
    #[error(transparent)]
    Cert(#[from] CertError),
}

impl DirError {
    /// A failure of the file system while writing, rather than a refusal (exit code 1 rather than 2).
    pub fn is_io(&self) -> bool {
        matches!(self, DirError::Cert(e) if e.is_io())
    }
}

fn ca_advice(cause: &CaError) -> &'static str {
    match cause {
        CaError::Expired { .. } => "replace it: a CA rotation starts with --new-ca",
        CaError::NotYetValid { .. } => "check the system clock",
        CaError::Files(_) | CaError::NotACa { .. } | CaError::UnusableKey { .. } => {
            "restore ca.crt and ca.key as they were (they must belong together), or replace the CA with --new-ca"
        }
    }
}

/// Takes `step` in `dir`: reads what is there, refuses a step that would break requests, writes the new
/// files (the caBundle in `ca-bundle` too) and says what it did. `sans` are the serving certificate's.
pub fn run_step(
    dir: &Path,
    step: Step,
    sans: &[String],
    now: SystemTime,
) -> Result<Outcome, DirError> {
    // A mistyped SAN is refused before anything is read or made.
    parse_sans(sans)?;
    let paths = Paths::in_dir(dir);
    let found = Found::read(&paths)?;
    let (outcome, mut changes) = match step {
        Step::Serving => serving(&paths, &found, sans, now)?,
        Step::NewCa => new_ca(&paths, &found, now)?,
        Step::DropOldCa => drop_old_ca(&paths, &found)?,
    };
    // The bundle goes before a removal, so that an interrupted drop leaves both CAs trusted and can be
    // run again.
    let bundle_file = Change::write(
        paths.bundle.clone(),
        format!("{}\n", outcome.ca_bundle_base64()),
        Access::Public,
    );
    let at = changes
        .iter()
        .position(|c| matches!(c, Change::Remove { .. }))
        .unwrap_or(changes.len());
    changes.insert(at, bundle_file);
    files::apply(dir, &changes)?;
    Ok(outcome)
}

struct Paths {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    previous: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Paths {
        Paths {
            ca_cert: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            previous: dir.join(PREVIOUS_CA_CERT_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            bundle: dir.join(CA_BUNDLE_FILE),
        }
    }
}

/// The files DIR holds, read once.
struct Found {
    ca_cert: Option<Vec<u8>>,
    ca_key: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
}

impl Found {
    fn read(paths: &Paths) -> Result<Found, DirError> {
        Ok(Found {
            ca_cert: read_if_present(&paths.ca_cert)?,
            ca_key: read_if_present(&paths.ca_key)?,
            previous: read_if_present(&paths.previous)?,
            cert: read_if_present(&paths.cert)?,
        })
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, DirError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        // Under a path that is not a directory nothing is present; creating DIR then says what is wrong.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(cause) => Err(DirError::Read {
            path: path.to_owned(),
            cause,
        }),
    }
}

/// PEM files one after the other, each ending with a newline.
fn concat_pem(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part);
        if !part.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

type Plan = (Outcome, Vec<Change>);

/// `certs`: a serving pair from the CA in DIR, or a first CA and its serving pair.
fn serving(
    paths: &Paths,
    found: &Found,
    sans: &[String],
    now: SystemTime,
) -> Result<Plan, DirError> {
    let serving_files = |pair: &super::issue::ServingPair| {
        // Key before certificate: a reader that sees the new certificate also finds its key.
        [
            Change::write(paths.key.clone(), pair.key_pem.as_str(), Access::Private),
            Change::write(paths.cert.clone(), pair.cert_pem.as_str(), Access::Public),
        ]
    };
    match (&found.ca_cert, &found.ca_key) {
        (None, None) => {
            if found.previous.is_some() {
                return Err(DirError::PreviousWithoutCa {
                    previous: paths.previous.clone(),
                    cert: paths.ca_cert.clone(),
                });
            }
            let ca = Ca::generate(now)?;
            let pair = ca.issue_serving(sans, now)?;
            let mut changes = vec![
                Change::write(paths.ca_key.clone(), ca.key_pem(), Access::Private),
                Change::write(paths.ca_cert.clone(), ca.cert_pem(), Access::Public),
            ];
            changes.extend(serving_files(&pair));
            let outcome = Outcome {
                ca_bundle_pem: concat_pem(&[ca.cert_pem().as_bytes()]),
                done: Done::FirstCa {
                    ca: ca.info().clone(),
                    serving: pair.info,
                },
            };
            Ok((outcome, changes))
        }
        (Some(cert), Some(key)) => {
            let ca = Ca::load(&paths.ca_cert, cert, &paths.ca_key, key, now)
                .map_err(|cause| DirError::UnusableCa { cause })?;
            // Read before anything is made: a previous CA that does not parse would break the bundle.
            if let Some(previous) = &found.previous {
                inspect::read_single(&paths.previous, previous)?;
            }
            let pair = ca.issue_serving(sans, now)?;
            let changes = serving_files(&pair).into();
            let (ca_bundle_pem, done) = match &found.previous {
                None => (
                    concat_pem(&[cert]),
                    Done::ServingRenewed {
                        ca: ca.info().clone(),
                        serving: pair.info,
                        cut_to_ca: pair.cut_to_ca,
                    },
                ),
                Some(previous) => (
                    concat_pem(&[cert, previous]),
                    Done::RotationServing {
                        ca: ca.info().clone(),
                        serving: pair.info,
                        cut_to_ca: pair.cut_to_ca,
                    },
                ),
            };
            Ok((
                Outcome {
                    done,
                    ca_bundle_pem,
                },
                changes,
            ))
        }
        (Some(_), None) => Err(DirError::MissingCaKey {
            cert: paths.ca_cert.clone(),
            key: paths.ca_key.clone(),
        }),
        (None, Some(_)) => Err(DirError::MissingCaCert {
            cert: paths.ca_cert.clone(),
            key: paths.ca_key.clone(),
        }),
    }
}

/// `certs --new-ca`: step 1 of a CA rotation. Only the current CA's certificate is needed: it is kept to
/// be trusted, never to sign again (so an expired or keyless CA can still be replaced).
fn new_ca(paths: &Paths, found: &Found, now: SystemTime) -> Result<Plan, DirError> {
    if found.previous.is_some() {
        return Err(DirError::RotationInProgress {
            previous: paths.previous.clone(),
        });
    }
    let Some(current_pem) = &found.ca_cert else {
        return Err(DirError::NoCaToReplace {
            cert: paths.ca_cert.clone(),
        });
    };
    let current = inspect::read_single(&paths.ca_cert, current_pem)?;
    if !current.is_ca {
        return Err(DirError::NotACa {
            path: paths.ca_cert.clone(),
        });
    }
    if let Some(serving_pem) = &found.cert {
        let serving = inspect::read_leaf(&paths.cert, serving_pem)?;
        if !serving.signed_by(&current) {
            return Err(DirError::ServingNotFromCurrentCa {
                serving: paths.cert.clone(),
                ca: paths.ca_cert.clone(),
            });
        }
    }
    let ca = Ca::generate(now)?;
    let changes = vec![
        // The previous CA first: whatever happens next, it is not lost.
        Change::write(paths.previous.clone(), current_pem.clone(), Access::Public),
        Change::write(paths.ca_key.clone(), ca.key_pem(), Access::Private),
        Change::write(paths.ca_cert.clone(), ca.cert_pem(), Access::Public),
    ];
    let outcome = Outcome {
        ca_bundle_pem: concat_pem(&[ca.cert_pem().as_bytes(), current_pem]),
        done: Done::RotationStarted {
            ca: ca.info().clone(),
            previous: current,
        },
    };
    Ok((outcome, changes))
}

/// `certs --drop-old-ca`: step 3 of a CA rotation, refused while the serving certificate in DIR is not
/// the new CA's.
fn drop_old_ca(paths: &Paths, found: &Found) -> Result<Plan, DirError> {
    let Some(previous_pem) = &found.previous else {
        return Err(DirError::NothingToDrop {
            previous: paths.previous.clone(),
        });
    };
    let Some(ca_pem) = &found.ca_cert else {
        return Err(DirError::PreviousWithoutCa {
            previous: paths.previous.clone(),
            cert: paths.ca_cert.clone(),
        });
    };
    let ca = inspect::read_single(&paths.ca_cert, ca_pem)?;
    let dropped = inspect::read_single(&paths.previous, previous_pem)?;
    let Some(serving_pem) = &found.cert else {
        return Err(DirError::NoServingCert {
            serving: paths.cert.clone(),
        });
    };
    let serving: CertInfo = inspect::read_leaf(&paths.cert, serving_pem)?;
    if !serving.signed_by(&ca) {
        return Err(DirError::ServingNotFromNewCa {
            serving: paths.cert.clone(),
            ca: paths.ca_cert.clone(),
        });
    }
    let outcome = Outcome {
        ca_bundle_pem: concat_pem(&[ca_pem]),
        done: Done::RotationFinished { ca, dropped },
    };
    Ok((
        outcome,
        vec![Change::Remove {
            path: paths.previous.clone(),
        }],
    ))
}

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
