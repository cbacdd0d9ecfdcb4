//! `stage-guard next NAME`: where a Workflow may go from where it is, in words, with the command that
//! moves it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::core::OverrideConfig;
use crate::core::audit::human;
use crate::core::moves::Open;
use crate::core::quote_stage;

/// Who runs the command, as the API server knows them (a SelfSubjectReview), when it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

/// The Workflow `namespace/name` and what is open to it.
pub struct NextView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub open: &'a Open,
    pub in_stage_for: Option<Duration>,
    pub override_: &'a OverrideConfig,
    pub requester: Option<&'a Requester>,
    /// `stage-guard` or `kubectl stage`.
    pub program: &'a str,
}

fn or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

impl NextView<'_> {
    pub fn text(&self) -> String {
        let open = self.open;
        let who = format!("{}/{}", self.namespace, self.name);
        let set = |stage: &str| {
            format!(
                "{} set {} {stage} -n {}",
                self.program, self.name, self.namespace
            )
        };
        let mut out = String::new();
        let Some(pipeline) = &open.pipeline else {
            let _ = writeln!(
                out,
                "{who} (stage {}) is in no pipeline: its stage changes are not judged",
                quote_stage(open.stage.as_deref())
            );
            return out;
        };
        let since = self
            .in_stage_for
            .map(|d| format!(", for {}", human(d)))
            .unwrap_or_default();
        match &open.stage {
            Some(stage) => {
                let _ = writeln!(
                    out,
                    "{who} is at {} (pipeline {pipeline}){since}",
                    quote_stage(Some(stage))
                );
            }
            None => {
                let _ = writeln!(out, "{who} has no stage label (pipeline {pipeline})");
            }
        }
        match open.next.as_slice() {
            [] if !open.known => {
                let _ = writeln!(
                    out,
                    "next: none, {} is not a stage of pipeline {pipeline}",
                    quote_stage(open.stage.as_deref())
                );
            }
            [] => {
                let _ = writeln!(out, "next: none, a final stage");
            }
            [only] => {
                let _ = writeln!(out, "next: {only}\n  {}", set(only));
            }
            many => {
                let _ = writeln!(out, "next: {}\n  {}", many.join(", "), set("STAGE"));
            }
        }
        if open.forced_only.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "forced only (a permitted override): {}\n  {} --reason REASON",
            open.forced_only.join(", "),
            set("STAGE")
        );
        let o = self.override_;
        if o.users.is_empty() && o.groups.is_empty() {
            let _ = writeln!(
                out,
                "  no one may force a change: the configuration's override lists no user or group"
            );
        } else {
            let _ = writeln!(
                out,
                "  permitted: users {}; groups {}",
                or_none(&o.users),
                or_none(&o.groups)
            );
        }
        if let Some(me) = self.requester {
            let _ = writeln!(
                out,
                "  you: {} (groups {}): {}",
                me.username,
                or_none(&me.groups),
                if o.permits(&me.username, &me.groups) {
                    "permitted"
                } else {
                    "not permitted"
                }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Policy;
    use crate::core::audit::Stored;
    use crate::core::moves::open_from;
    use std::collections::BTreeMap;

    const CONFIG: &str = "stages: [a, b, c]\ntransitions:\n  a: [b]\n  b: [c, a]\noverride:\n  groups: [pipeline-admins]\n";

    fn at(stage: Option<&str>) -> Stored {
        Stored {
            namespace: "argo".into(),
            name: "task-7".into(),
            labels: stage
                .map(|s| BTreeMap::from([("current-stage".to_owned(), s.to_owned())]))
                .unwrap_or_default(),
            ..Stored::default()
        }
    }

    fn text(p: &Policy, stage: Option<&str>, me: Option<&Requester>) -> String {
        let open = open_from(p, &at(stage));
        NextView {
            namespace: "argo",
            name: "task-7",
            open: &open,
            in_stage_for: Some(Duration::from_secs(300)),
            override_: &p.override_,
            requester: me,
            program: "kubectl stage",
        }
        .text()
    }

    #[test]
    fn next_names_the_edges_the_forced_moves_and_who_may_force_them() {
        let p = Policy::from_yaml(CONFIG).unwrap();
        let alice = Requester {
            username: "alice".into(),
            groups: vec!["pipeline-admins".into()],
        };
        assert_eq!(
            text(&p, Some("a"), Some(&alice)),
            "argo/task-7 is at \"a\" (pipeline default), for 5m\n\
             next: b\n  kubectl stage set task-7 b -n argo\n\
             forced only (a permitted override): c\n  kubectl stage set task-7 STAGE -n argo --reason REASON\n  \
             permitted: users none; groups pipeline-admins\n  \
             you: alice (groups pipeline-admins): permitted\n"
        );
        assert_eq!(
            text(&p, Some("b"), None),
            "argo/task-7 is at \"b\" (pipeline default), for 5m\n\
             next: c, a\n  kubectl stage set task-7 STAGE -n argo\n"
        );
        assert!(text(&p, Some("c"), None).contains("\nnext: none, a final stage\n"));
        assert!(
            text(&p, Some("x"), None)
                .contains("\nnext: none, \"x\" is not a stage of pipeline default\nforced only (a permitted override): a, b, c\n")
        );
        assert!(
            text(&p, None, None)
                .starts_with("argo/task-7 has no stage label (pipeline default)\nnext: a\n")
        );
        let nobody = Policy::from_yaml("stages: [a, b, c]\noverride:\n  groups: []\n").unwrap();
        assert!(text(&nobody, Some("a"), None).ends_with(
            "  no one may force a change: the configuration's override lists no user or group\n"
        ));
    }
}
