//! The decoder against the reference: the same verdict (answered or 400) on every body, and on an
//! answered one the same values for everything a decision can read.

use stage_guard::admission::request::{self, Meta, Request};

use crate::oracle::{self, ObjectSeen, Seen};

/// Keys the decisions look up besides those in the body: the default label and annotations.
const PROBES: [&str; 4] = [
    "current-stage",
    "stage-guard.io/history",
    "stage-guard.io/override-reason",
    "workflows.argoproj.io/resubmitted-from-workflow",
];

pub fn decode(data: &[u8]) -> Result<(), String> {
    let ours = request::decode(data);
    let reference = oracle::review(data);
    match (&ours, &reference) {
        (Ok(r), Ok(seen)) => same_request(r, seen),
        (Err(_), Err(_)) => Ok(()),
        // serde's derive also reads a struct from a JSON array of its fields in order; the decoder
        // refuses that form, which no API server sends.
        (Err(e), Ok(_)) if e.to_string().contains("must be an object") => Ok(()),
        (Err(e), Ok(_)) => Err(format!(
            "decode refused a body serde_json accepts: {e}\n{}",
            String::from_utf8_lossy(data)
        )),
        (Ok(_), Err(e)) => Err(format!(
            "decode accepted a body serde_json refuses: {e}\n{}",
            String::from_utf8_lossy(data)
        )),
    }
}

fn same_request(r: &Request<'_>, seen: &Seen) -> Result<(), String> {
    let top = (
        &r.uid,
        r.operation,
        &r.namespace,
        &r.name,
        &r.user.username,
        &r.user.groups,
    );
    let want = (
        &seen.uid,
        seen.operation,
        &seen.namespace,
        &seen.name,
        &seen.username,
        &seen.groups,
    );
    if top != want {
        return Err(format!("request read as {top:?}, reference {want:?}"));
    }
    same_object("object", &r.object, &seen.object)?;
    same_object("oldObject", &r.old_object, &seen.old_object)
}

fn same_object(which: &str, m: &Meta<'_>, seen: &ObjectSeen) -> Result<(), String> {
    let plain = (
        m.present,
        m.has_metadata,
        &m.name,
        &m.generate_name,
        &m.resource_version,
        m.has_labels,
        m.has_annotations,
    );
    let want = (
        seen.present,
        seen.has_metadata,
        &seen.name,
        &seen.generate_name,
        &seen.resource_version,
        seen.has_labels,
        seen.has_annotations,
    );
    if plain != want {
        return Err(format!("{which} read as {plain:?}, reference {want:?}"));
    }
    let keys = PROBES
        .iter()
        .copied()
        .chain(seen.labels.keys().map(String::as_str))
        .chain(seen.annotations.keys().map(String::as_str));
    for key in keys {
        let label = m.label(key);
        if label != seen.labels.get(key).map(String::as_str) {
            return Err(format!(
                "{which} label {key:?} read as {label:?}, reference {:?}",
                seen.labels.get(key)
            ));
        }
        let annotation = m.annotation(key);
        if annotation.as_deref() != seen.annotations.get(key).map(String::as_str) {
            return Err(format!(
                "{which} annotation {key:?} read as {annotation:?}, reference {:?}",
                seen.annotations.get(key)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"CREATE","object":{"metadata":{"labels":{"current-stage":"a"},"annotations":{"x":"y"}}}}}"#;

    #[test]
    fn agreeing_decoders_pass_and_any_difference_is_a_finding() {
        assert_eq!(decode(BODY.as_bytes()), Ok(()));
        let r = request::decode(BODY.as_bytes()).unwrap();
        let mut seen = oracle::review(BODY.as_bytes()).unwrap();
        assert_eq!(same_request(&r, &seen), Ok(()));
        seen.object
            .labels
            .insert("current-stage".into(), "b".into());
        assert!(same_request(&r, &seen).is_err());
        let mut seen = oracle::review(BODY.as_bytes()).unwrap();
        seen.object
            .annotations
            .insert("stage-guard.io/history".into(), "[]".into());
        assert!(same_request(&r, &seen).is_err());
        let mut seen = oracle::review(BODY.as_bytes()).unwrap();
        seen.username = "someone".into();
        assert!(same_request(&r, &seen).is_err());
    }
}
