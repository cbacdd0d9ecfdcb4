//! The certificate directory's steps and refusals, on real files.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use super::*;
use crate::certs::issue::generate_bundle_at;
use crate::certs::{CertBundle, generate_bundle};

const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn sans() -> Vec<String> {
    vec!["hook.ops.svc".to_owned(), "127.0.0.1".to_owned()]
}

fn run(dir: &Path, step: Step) -> Result<Outcome, DirError> {
    run_step(dir, step, &sans(), SystemTime::now())
}

/// Every file of `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn info(dir: &Path, name: &str) -> CertInfo {
    inspect::read_leaf(Path::new(name), &read(dir, name)).unwrap()
}

fn subjects_in_bundle(pem: &[u8]) -> Vec<String> {
    inspect::read_all(Path::new("bundle"), pem)
        .unwrap()
        .into_iter()
        .map(|c| c.subject)
        .collect()
}

/// The bundle file holds what stdout prints.
fn assert_bundle_file(dir: &Path, outcome: &Outcome) {
    assert_eq!(
        String::from_utf8(read(dir, CA_BUNDLE_FILE)).unwrap(),
        format!("{}\n", outcome.ca_bundle_base64())
    );
}

fn assert_refused(
    result: Result<Outcome, DirError>,
    dir: &Path,
    before: &BTreeMap<String, Vec<u8>>,
) -> DirError {
    let error = result.expect_err("the step was refused");
    assert!(!error.is_io(), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    assert_eq!(
        &snapshot(dir),
        before,
        "a refused step changed the directory"
    );
    error
}

#[test]
fn a_first_run_makes_a_ca_and_a_serving_pair_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");

    let outcome = run(&dir, Step::Serving).unwrap();

    assert!(
        matches!(outcome.done, Done::FirstCa { .. }),
        "{:?}",
        outcome.done
    );
    assert_eq!(outcome.ca_bundle_pem, read(&dir, CA_CERT_FILE));
    assert_bundle_file(&dir, &outcome);
    assert!(info(&dir, CERT_FILE).signed_by(&info(&dir, CA_CERT_FILE)));
    crate::pem::load_certified_key(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE)).unwrap();
    crate::pem::load_certified_key(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).unwrap();
    assert!(!dir.join(PREVIOUS_CA_CERT_FILE).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert_eq!(mode(CA_BUNDLE_FILE), 0o644);
    }
}

#[test]
fn a_second_run_reuses_the_ca_and_keeps_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = run(dir, Step::Serving).unwrap();
    let before = snapshot(dir);

    let second = run(dir, Step::Serving).unwrap();

    assert!(
        matches!(
            second.done,
            Done::ServingRenewed {
                cut_to_ca: false,
                ..
            }
        ),
        "{:?}",
        second.done
    );
    let after = snapshot(dir);
    for unchanged in [CA_CERT_FILE, CA_KEY_FILE, CA_BUNDLE_FILE] {
        assert_eq!(after[unchanged], before[unchanged], "{unchanged} changed");
    }
    for renewed in [CERT_FILE, KEY_FILE] {
        assert_ne!(after[renewed], before[renewed], "{renewed} was not renewed");
    }
    assert_eq!(second.ca_bundle_base64(), first.ca_bundle_base64());
    assert!(info(dir, CERT_FILE).signed_by(&info(dir, CA_CERT_FILE)));
    crate::pem::load_certified_key(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).unwrap();
}

#[test]
fn a_ca_rotation_trusts_both_cas_until_the_serving_pair_is_the_new_cas() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, Step::Serving).unwrap();
    let old = snapshot(dir);
    let old_ca = info(dir, CA_CERT_FILE);

    // Step 1: a new CA; the old one kept for trust; the serving pair untouched.
    let started = run(dir, Step::NewCa).unwrap();
    let Done::RotationStarted { ca, previous } = &started.done else {
        panic!("{:?}", started.done)
    };
    assert_eq!(previous, &old_ca);
    let new_ca = info(dir, CA_CERT_FILE);
    assert_eq!(ca, &new_ca);
    assert_ne!(
        new_ca.subject, old_ca.subject,
        "the two generations have different names"
    );
    assert_eq!(read(dir, PREVIOUS_CA_CERT_FILE), old[CA_CERT_FILE]);
    assert_ne!(read(dir, CA_KEY_FILE), old[CA_KEY_FILE]);
    crate::pem::load_certified_key(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE)).unwrap();
    assert_eq!(read(dir, CERT_FILE), old[CERT_FILE]);
    assert_eq!(read(dir, KEY_FILE), old[KEY_FILE]);
    assert_eq!(
        subjects_in_bundle(&started.ca_bundle_pem),
        [new_ca.subject.clone(), old_ca.subject.clone()]
    );
    assert_bundle_file(dir, &started);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Step 2: the serving pair from the new CA; the bundle as in step 1.
    let serving = run(dir, Step::Serving).unwrap();
    assert!(
        matches!(serving.done, Done::RotationServing { .. }),
        "{:?}",
        serving.done
    );
    assert_eq!(serving.ca_bundle_pem, started.ca_bundle_pem);
    assert!(info(dir, CERT_FILE).signed_by(&new_ca));
    assert_ne!(read(dir, CERT_FILE), old[CERT_FILE]);

    // Step 3: the previous CA leaves the bundle.
    let finished = run(dir, Step::DropOldCa).unwrap();
    let Done::RotationFinished { ca, dropped } = &finished.done else {
        panic!("{:?}", finished.done)
    };
    assert_eq!((ca, dropped), (&new_ca, &old_ca));
    assert!(!dir.join(PREVIOUS_CA_CERT_FILE).exists());
    assert_eq!(finished.ca_bundle_pem, read(dir, CA_CERT_FILE));
    assert_bundle_file(dir, &finished);

    // Afterwards the plain command is an ordinary serving rotation under the new CA.
    let later = run(dir, Step::Serving).unwrap();
    assert!(
        matches!(later.done, Done::ServingRenewed { .. }),
        "{:?}",
        later.done
    );
    assert_eq!(later.ca_bundle_pem, finished.ca_bundle_pem);
}

#[test]
fn a_new_ca_is_refused_while_a_rotation_is_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, Step::Serving).unwrap();
    run(dir, Step::NewCa).unwrap();
    let before = snapshot(dir);
    let error = assert_refused(run(dir, Step::NewCa), dir, &before);
    assert!(
        matches!(error, DirError::RotationInProgress { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--drop-old-ca"), "{error}");

    // Also after step 2, until the previous CA is dropped.
    run(dir, Step::Serving).unwrap();
    let before = snapshot(dir);
    assert_refused(run(dir, Step::NewCa), dir, &before);
}

#[test]
fn dropping_the_old_ca_is_refused_while_the_serving_pair_is_the_old_cas() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, Step::Serving).unwrap();
    run(dir, Step::NewCa).unwrap();
    let before = snapshot(dir);

    let error = assert_refused(run(dir, Step::DropOldCa), dir, &before);

    assert!(
        matches!(error, DirError::ServingNotFromNewCa { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("would break every request"), "{message}");
    assert!(message.contains("step 2"), "{message}");

    fs::remove_file(dir.join(CERT_FILE)).unwrap();
    let before = snapshot(dir);
    let error = assert_refused(run(dir, Step::DropOldCa), dir, &before);
    assert!(matches!(error, DirError::NoServingCert { .. }), "{error:?}");
}

#[test]
fn nothing_to_drop_and_nothing_to_replace_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let empty = snapshot(dir);
    let error = assert_refused(run(dir, Step::NewCa), dir, &empty);
    assert!(matches!(error, DirError::NoCaToReplace { .. }), "{error:?}");
    assert!(
        error.to_string().contains("run without --new-ca"),
        "{error}"
    );

    run(dir, Step::Serving).unwrap();
    let before = snapshot(dir);
    let error = assert_refused(run(dir, Step::DropOldCa), dir, &before);
    assert!(matches!(error, DirError::NothingToDrop { .. }), "{error:?}");
}

/// Spoils a good directory, using another CA's files where it needs them.
type Spoil = fn(&Path, &CertBundle);
/// Whether an error is the one expected.
type Expect = fn(&DirError) -> bool;

#[test]
fn a_ca_that_cannot_sign_is_never_replaced_silently() {
    let other = generate_bundle(&sans()).unwrap();
    // (what is wrong, how, the error it must give)
    let cases: [(&str, Spoil, Expect); 5] = [
        (
            "the key of another CA",
            |dir, other| fs::write(dir.join(CA_KEY_FILE), &other.ca_key_pem).unwrap(),
            |e| {
                matches!(
                    e,
                    DirError::UnusableCa {
                        cause: CaError::Files(PemError::KeyMismatch { .. })
                    }
                )
            },
        ),
        (
            "a CA certificate that does not parse",
            |dir, _| {
                fs::write(
                    dir.join(CA_CERT_FILE),
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )
                .unwrap()
            },
            |e| {
                matches!(
                    e,
                    DirError::UnusableCa {
                        cause: CaError::Files(_)
                    }
                )
            },
        ),
        (
            "a serving certificate where the CA should be",
            |dir, other| {
                fs::write(dir.join(CA_CERT_FILE), &other.cert_pem).unwrap();
                fs::write(dir.join(CA_KEY_FILE), &other.key_pem).unwrap();
            },
            |e| {
                matches!(
                    e,
                    DirError::UnusableCa {
                        cause: CaError::NotACa { .. }
                    }
                )
            },
        ),
        (
            "no CA key",
            |dir, _| fs::remove_file(dir.join(CA_KEY_FILE)).unwrap(),
            |e| matches!(e, DirError::MissingCaKey { .. }),
        ),
        (
            "no CA certificate",
            |dir, _| fs::remove_file(dir.join(CA_CERT_FILE)).unwrap(),
            |e| matches!(e, DirError::MissingCaCert { .. }),
        ),
    ];
    for (what, spoil, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run(dir, Step::Serving).unwrap();
        spoil(dir, &other);
        let before = snapshot(dir);
        let error = assert_refused(run(dir, Step::Serving), dir, &before);
        assert!(expected(&error), "{what}: {error:?}");
        assert!(
            error.to_string().contains(&*dir.to_string_lossy()),
            "{what}: the message names no file: {error}"
        );
    }
}

#[test]
fn an_expired_ca_is_refused_for_signing_but_can_be_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Made eleven years ago: expired a year ago, like its serving certificate.
    let old = generate_bundle_at(&sans(), SystemTime::now() - 11 * YEAR).unwrap();
    for (name, pem) in [
        (CA_CERT_FILE, &old.ca_cert_pem),
        (CA_KEY_FILE, &old.ca_key_pem),
        (CERT_FILE, &old.cert_pem),
        (KEY_FILE, &old.key_pem),
    ] {
        fs::write(dir.join(name), pem).unwrap();
    }
    let before = snapshot(dir);

    let error = assert_refused(run(dir, Step::Serving), dir, &before);
    assert!(
        matches!(
            error,
            DirError::UnusableCa {
                cause: CaError::Expired { .. }
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("expired at"), "{message}");
    assert!(message.contains("--new-ca"), "{message}");

    let started = run(dir, Step::NewCa).unwrap();
    assert!(matches!(started.done, Done::RotationStarted { .. }));
    assert_eq!(read(dir, PREVIOUS_CA_CERT_FILE), old.ca_cert_pem.as_bytes());
    run(dir, Step::Serving).unwrap();
    run(dir, Step::DropOldCa).unwrap();
}

#[test]
fn a_new_ca_is_refused_while_the_serving_pair_is_not_the_current_cas() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, Step::Serving).unwrap();
    let stranger = generate_bundle(&sans()).unwrap();
    fs::write(dir.join(CERT_FILE), &stranger.cert_pem).unwrap();
    fs::write(dir.join(KEY_FILE), &stranger.key_pem).unwrap();
    let before = snapshot(dir);

    let error = assert_refused(run(dir, Step::NewCa), dir, &before);

    assert!(
        matches!(error, DirError::ServingNotFromCurrentCa { .. }),
        "{error:?}"
    );
}

#[test]
fn a_bad_san_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let error = run_step(
        &dir,
        Step::Serving,
        &["bad name".to_owned()],
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(error, DirError::Cert(CertError::InvalidSan { .. })),
        "{error:?}"
    );
    assert!(!error.is_io());
    assert!(!dir.exists(), "the directory was created");
}

#[test]
fn a_ca_ending_within_a_year_is_used_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Made 9.5 years ago: half a year left.
    let old = generate_bundle_at(&sans(), SystemTime::now() - 19 * YEAR / 2).unwrap();
    fs::write(dir.join(CA_CERT_FILE), &old.ca_cert_pem).unwrap();
    fs::write(dir.join(CA_KEY_FILE), &old.ca_key_pem).unwrap();

    let outcome = run(dir, Step::Serving).unwrap();

    assert!(
        matches!(
            outcome.done,
            Done::ServingRenewed {
                cut_to_ca: true,
                ..
            }
        ),
        "{:?}",
        outcome.done
    );
    assert_eq!(
        info(dir, CERT_FILE).not_after_unix,
        info(dir, CA_CERT_FILE).not_after_unix
    );
    let lines = outcome.done.progress(dir, &sans());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning:") && l.contains("--new-ca")),
        "{lines:#?}"
    );
}

#[test]
fn progress_says_what_was_made_and_what_comes_next() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // (step, what the first line starts with, what the next-steps line must name)
    let steps = [
        (
            Step::Serving,
            "made a new CA",
            "deploy/overlays/static-certs",
        ),
        (
            Step::Serving,
            "issued a new serving certificate",
            "stage_guard_tls_cert_not_after_timestamp_seconds reads",
        ),
        (
            Step::NewCa,
            "CA rotation, step 1 of 3",
            "without --new-ca (step 2)",
        ),
        (
            Step::Serving,
            "CA rotation, step 2 of 3",
            "--drop-old-ca (step 3)",
        ),
        (Step::DropOldCa, "CA rotation, step 3 of 3", "complete"),
    ];
    for (step, first, next) in steps {
        let outcome = run(dir, step).unwrap();
        let lines = outcome.done.progress(dir, &sans());
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].starts_with(first), "{step:?}: {}", lines[0]);
        assert!(
            lines[1].starts_with("next: apply"),
            "{step:?}: {}",
            lines[1]
        );
        assert!(lines[1].contains(next), "{step:?}: {}", lines[1]);
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }
    // The serving steps name the certificate the pods must end up serving.
    let outcome = run(dir, Step::Serving).unwrap();
    let serving = info(dir, CERT_FILE);
    let lines = outcome.done.progress(dir, &sans());
    assert!(lines[0].contains(&serving.serial), "{}", lines[0]);
    assert!(lines[0].contains("hook.ops.svc, 127.0.0.1"), "{}", lines[0]);
    assert!(
        lines[1].contains(&serving.not_after_unix.to_string()),
        "{}",
        lines[1]
    );
}
