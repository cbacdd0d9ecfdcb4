//! stage-guard through a real kube-apiserver: the built binary registered with the project's own
//! webhook configurations, driven with the real `kubectl` (and Argo's real CLI and controller) as
//! the users of a control plane built from Go modules (`tests/testenv`).
//!
//! The API server is the judge here: it sends the AdmissionReviews, applies the JSON Patches,
//! evaluates the matchConditions, serialises racing writers and turns denials into the errors that
//! kubectl prints. `tests/support/` imitates it for the fast tests; this suite keeps the imitation
//! honest.
//!
//! Run it alone with `cargo test --test e2e_apiserver` (the first run builds kube-apiserver and
//! etcd, about 15 minutes on 2 cores; later runs reuse the build from `~/.cache/stage-guard/`).

#[path = "../support/mod.rs"]
mod support;

mod argo;
mod create;
mod drain;
mod failure;
mod harness;
mod helm;
mod imitation;
mod install;
mod monitor;
mod races;
mod recorder;
mod recovery;
mod rotation;
mod stage_moves;
mod steer;
mod tls;
mod unjudged;
mod vap;
mod write_stream;

use harness::Suite;
use libtest_mimic::{Arguments, Failed, Trial};
use std::sync::Arc;

/// One scenario: a name for the test list and the function that runs it.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Suite) -> anyhow::Result<()>,
}

fn main() {
    let mut args = Arguments::from_args();
    // Webhook configurations are cluster-wide: one scenario at a time.
    args.test_threads = Some(1);

    let suite = Arc::new(Suite::new());
    let groups: &[(&str, &[Scenario])] = &[
        ("stage_moves", stage_moves::SCENARIOS),
        ("recovery", recovery::SCENARIOS),
        ("create", create::SCENARIOS),
        ("unjudged", unjudged::SCENARIOS),
        ("races", races::SCENARIOS),
        ("failure", failure::SCENARIOS),
        ("tls", tls::SCENARIOS),
        ("rotation", rotation::SCENARIOS),
        ("drain", drain::SCENARIOS),
        ("argo", argo::SCENARIOS),
        ("imitation", imitation::SCENARIOS),
        ("helm", helm::SCENARIOS),
        ("install", install::SCENARIOS),
        ("vap", vap::SCENARIOS),
        ("monitor", monitor::SCENARIOS),
        ("steer", steer::SCENARIOS),
    ];
    let mut trials = Vec::new();
    for (group, scenarios) in groups {
        for scenario in *scenarios {
            let suite = suite.clone();
            let run = scenario.run;
            trials.push(Trial::test(
                format!("{group}::{}", scenario.name),
                move || run(&suite).map_err(|e| Failed::from(format!("{e:#}"))),
            ));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Every trial (and its clone of the suite) is gone: this drop stops the control plane.
    drop(suite);
    conclusion.exit();
}
