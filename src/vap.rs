//! `stage-guard vap`: the stage rules as ValidatingAdmissionPolicies (CEL, run inside the API server),
//! a fallback that needs no webhook. One policy holds the rules every pipeline shares (an override only
//! from a permitted requester; no move of a staged Workflow into another pipeline) and is always
//! enforced; one policy per pipeline holds its graph and is bound with `Deny` or `Warn` by its mode.
//!
//! What CEL cannot do here is said in the output's header: it cannot write (no history, no reset of
//! a resubmitted Workflow, the override annotation stays), and it does not read the history.

use std::fmt::Write as _;

use crate::core::{Mode, Pipeline, Policy, RESUBMITTED_FROM_LABEL, Resubmit};

/// What stands for "no stage label" in the policies' CEL: not a valid label value, so never a stage.
const NONE: &str = "<none>";

/// A CEL string literal.
fn lit(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| lit(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A label of `side` (`object` or `oldObject`, which is null on CREATE), or `<none>`.
fn label_of(side: &str, key: &str) -> String {
    format!(
        "({side} != null && has({side}.metadata.labels) && {k} in {side}.metadata.labels ? {side}.metadata.labels[{k}] : {none})",
        k = lit(key),
        none = lit(NONE)
    )
}

/// An annotation of `side`, or the empty string.
fn annotation_of(side: &str, key: &str) -> String {
    format!(
        "({side} != null && has({side}.metadata.annotations) && {k} in {side}.metadata.annotations ? {side}.metadata.annotations[{k}] : '')",
        k = lit(key)
    )
}

/// `side` belongs to `pipeline` by its selector (the namespace is the request's).
fn selected(side: &str, pipeline: &Pipeline) -> String {
    let mut terms = vec![format!("{side} != null")];
    for (key, value) in &pipeline.selector.labels {
        terms.push(format!(
            "has({side}.metadata.labels) && {k} in {side}.metadata.labels && {side}.metadata.labels[{k}] == {v}",
            k = lit(key),
            v = lit(value)
        ));
    }
    if let Some(namespaces) = &pipeline.selector.namespaces {
        terms.push(format!("request.namespace in {}", list(namespaces)));
    }
    format!("({})", terms.join(" && "))
}

/// The index of `side`'s pipeline, as `Policy::pipeline_for` finds it (the first that matches), or -1.
fn pipeline_index(side: &str, policy: &Policy) -> String {
    let mut expr = String::from("-1");
    for (i, p) in policy.pipelines.iter().enumerate().rev() {
        expr = format!("({} ? {i} : {expr})", selected(side, p));
    }
    expr
}

/// A DNS-subdomain-safe form of a pipeline name for object names.
fn object_name(i: usize, pipeline: &Pipeline) -> String {
    let clean: String = pipeline
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("stage-guard-stages-{i}-{}", clean.trim_matches('-'))
}

/// YAML for one CEL expression (a block scalar, so quotes need no escaping).
fn expression(y: &mut String, indent: &str, key: &str, expr: &str) {
    let _ = writeln!(y, "{indent}{key}: >-");
    let _ = writeln!(y, "{indent}  {expr}");
}

/// The matchConstraints every policy shares with the webhook configurations.
fn constraints(y: &mut String, policy: &Policy) {
    y.push_str(
        "  matchConstraints:\n    resourceRules:\n      - apiGroups: [\"argoproj.io\"]\n        apiVersions: [\"v1alpha1\"]\n        resources: [\"workflows\"]\n        operations: [\"CREATE\", \"UPDATE\"]\n    namespaceSelector:\n      matchExpressions:\n        - key: kubernetes.io/metadata.name\n          operator: NotIn\n          values: [\"stage-guard\", \"kube-system\"]\n    objectSelector:\n      matchExpressions:\n",
    );
    let _ = writeln!(
        y,
        "        - key: {}\n          operator: Exists",
        serde_json::Value::String(policy.label.clone())
    );
}

fn binding(y: &mut String, name: &str, actions: &str) {
    let _ = write!(
        y,
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: stage-guard\n    app.kubernetes.io/component: admission-policy\nspec:\n  policyName: {name}\n  validationActions: {actions}\n"
    );
}

fn policy_head(y: &mut String, name: &str) {
    let _ = write!(
        y,
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: stage-guard\n    app.kubernetes.io/component: admission-policy\nspec:\n  failurePolicy: Fail\n"
    );
}

/// Variables both kinds of policy use: the two stages, the override request and its permission.
fn common_variables(y: &mut String, policy: &Policy) {
    let o = &policy.override_;
    let vars = [
        ("old", label_of("oldObject", &policy.label)),
        ("new", label_of("object", &policy.label)),
        ("reason", annotation_of("object", &o.annotation)),
        ("oldReason", annotation_of("oldObject", &o.annotation)),
        (
            "permitted",
            format!(
                "request.userInfo.username in {} || (has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in {}))",
                list(&o.users),
                list(&o.groups)
            ),
        ),
        (
            "forced",
            "variables.reason != '' && variables.reason != variables.oldReason && variables.permitted"
                .to_owned(),
        ),
    ];
    for (name, expr) in vars {
        let _ = writeln!(y, "    - name: {name}");
        expression(y, "      ", "expression", &expr);
    }
}

/// The workflow as messages name it: `namespace/name`.
const WORKFLOW: &str = "request.namespace + '/' + (has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name : (has(object.metadata.generateName) ? object.metadata.generateName : '') + '(generated)')";

fn quoted(var: &str) -> String {
    format!(
        "(variables.{var} == {none} ? 'none' : '\"' + variables.{var} + '\"')",
        none = lit(NONE)
    )
}

/// The generated policies and bindings, as YAML documents.
pub fn policies(policy: &Policy) -> String {
    let mut y = String::new();
    y.push_str(
        "# ValidatingAdmissionPolicies generated by `stage-guard vap` from the stage configuration.\n\
         # They check what CEL can check inside the API server, without stage-guard running:\n\
         #   - a new stage must be an edge of the Workflow's pipeline (an entry stage from no label);\n\
         #   - unknown stages and removing the stage label are refused (skip and regression say which);\n\
         #   - an override (the annotation, present, non-empty and new) only from the configured users and\n\
         #     groups, and then any known stage (or none);\n\
         #   - a staged Workflow may not move into another pipeline without a permitted override;\n\
         #   - each pipeline's mode: Deny when enforced, Warn in warn mode (the shared rules always Deny).\n\
         # What they cannot do (only the webhooks can; see README, \"A fallback without the webhook\"):\n\
         #   - write: no history entry is stamped, the override annotation is not moved into the history and\n\
         #     stays on the object, and a resubmitted Workflow is not reset (`resubmit: reset`: its CREATE is\n\
         #     let through as it is);\n\
         #   - read the history: history-tampered and history-missing are not checked.\n",
    );

    // Shared rules: always enforced.
    let guards = "stage-guard-guards";
    policy_head(&mut y, guards);
    constraints(&mut y, policy);
    y.push_str("  variables:\n");
    common_variables(&mut y, policy);
    let _ = writeln!(y, "    - name: oldPipeline");
    expression(
        &mut y,
        "      ",
        "expression",
        &pipeline_index("oldObject", policy),
    );
    let _ = writeln!(y, "    - name: newPipeline");
    expression(
        &mut y,
        "      ",
        "expression",
        &pipeline_index("object", policy),
    );
    let known_by: Vec<String> = policy
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i}: {}", list(p.graph.stages())))
        .collect();
    let _ = writeln!(y, "    - name: knownBy");
    expression(
        &mut y,
        "      ",
        "expression",
        &format!("{{{}}}", known_by.join(", ")),
    );
    let _ = writeln!(y, "    - name: moved");
    expression(
        &mut y,
        "      ",
        "expression",
        &format!(
            "request.operation == 'UPDATE' && variables.old != {} && variables.oldPipeline != variables.newPipeline",
            lit(NONE)
        ),
    );
    y.push_str("  validations:\n");
    let _ = writeln!(y, "    - reason: Forbidden");
    expression(
        &mut y,
        "      ",
        "expression",
        "variables.reason == '' || variables.reason == variables.oldReason || variables.permitted",
    );
    expression(
        &mut y,
        "      ",
        "messageExpression",
        &format!(
            "'override on ' + {WORKFLOW} + ' denied (override-not-permitted): ' + (request.userInfo.username == '' ? '(unknown user)' : request.userInfo.username) + ' may not force stage changes (not listed under override.users or override.groups); remove the ' + {} + ' annotation'",
            lit(&policy.override_.annotation)
        ),
    );
    let _ = writeln!(y, "    - reason: Forbidden");
    expression(
        &mut y,
        "      ",
        "expression",
        "!variables.moved || variables.forced",
    );
    expression(
        &mut y,
        "      ",
        "messageExpression",
        &format!(
            "'update of ' + {WORKFLOW} + ' denied (pipeline-changed): its labels move it into another pipeline; only a permitted override may do that'"
        ),
    );
    // A forced move lands on a stage of the pipeline it moves into (or on none).
    let _ = writeln!(y, "    - reason: Forbidden");
    expression(
        &mut y,
        "      ",
        "expression",
        &format!(
            "!variables.moved || !variables.forced || variables.new == {} || variables.newPipeline < 0 || variables.new in variables.knownBy[variables.newPipeline]",
            lit(NONE)
        ),
    );
    expression(
        &mut y,
        "      ",
        "messageExpression",
        &format!(
            "'update of ' + {WORKFLOW} + ' denied (unknown-stage): \"' + variables.new + '\" is not a stage of the pipeline its labels move it into'"
        ),
    );
    binding(&mut y, guards, "[\"Deny\"]");

    for (i, p) in policy.pipelines.iter().enumerate() {
        let name = object_name(i, p);
        let g = &p.graph;
        policy_head(&mut y, &name);
        constraints(&mut y, policy);
        y.push_str("  matchConditions:\n");
        let _ = writeln!(
            y,
            "    - name: in-pipeline-{}",
            object_name(i, p).trim_start_matches("stage-guard-stages-")
        );
        expression(
            &mut y,
            "      ",
            "expression",
            &format!(
                "(request.operation == 'UPDATE' ? {} : {}) == {i}",
                pipeline_index("oldObject", policy),
                pipeline_index("object", policy)
            ),
        );
        // A move into another pipeline is the shared policy's to judge.
        let _ = writeln!(y, "    - name: not-a-move-between-pipelines");
        expression(
            &mut y,
            "      ",
            "expression",
            &format!(
                "!(request.operation == 'UPDATE' && {} != {} && {} != {})",
                label_of("oldObject", &policy.label),
                lit(NONE),
                pipeline_index("oldObject", policy),
                pipeline_index("object", policy)
            ),
        );
        if policy.resubmit == Resubmit::Reset {
            // The mutating webhook would remove the copied stage; a policy cannot, so it lets it be.
            let _ = writeln!(y, "    - name: not-a-resubmitted-copy");
            expression(
                &mut y,
                "      ",
                "expression",
                &format!(
                    "!(request.operation == 'CREATE' && has(object.metadata.labels) && {} in object.metadata.labels)",
                    lit(RESUBMITTED_FROM_LABEL)
                ),
            );
        }
        y.push_str("  variables:\n");
        common_variables(&mut y, policy);
        let known: Vec<&str> = g.stages().iter().map(String::as_str).collect();
        let mut next = vec![format!("{}: {}", lit(NONE), list(&g.entry_stages()))];
        next.extend(
            known
                .iter()
                .map(|s| format!("{}: {}", lit(s), list(&g.next_stages(Some(s))))),
        );
        let order: Vec<String> = known
            .iter()
            .enumerate()
            .map(|(n, s)| format!("{}: {n}", lit(s)))
            .collect();
        let vars = [
            ("known", list(&known)),
            ("next", format!("{{{}}}", next.join(", "))),
            ("order", format!("{{{}}}", order.join(", "))),
            (
                "resubmitKeep",
                if policy.resubmit == Resubmit::Keep {
                    format!(
                        "request.operation == 'CREATE' && has(object.metadata.labels) && {} in object.metadata.labels",
                        lit(RESUBMITTED_FROM_LABEL)
                    )
                } else {
                    "false".to_owned()
                },
            ),
        ];
        for (var, expr) in vars {
            let _ = writeln!(y, "    - name: {var}");
            expression(&mut y, "      ", "expression", &expr);
        }
        y.push_str("  validations:\n    - reason: Forbidden\n");
        expression(
            &mut y,
            "      ",
            "expression",
            &format!(
                "variables.old == variables.new || (variables.old in variables.next && variables.new in variables.next[variables.old]) || (variables.resubmitKeep && variables.new in variables.known) || (variables.forced && (variables.new == {none} || variables.new in variables.known))",
                none = lit(NONE)
            ),
        );
        let reason = format!(
            "((variables.new != {none} && !(variables.new in variables.known)) || (variables.old != {none} && !(variables.old in variables.known)) ? 'unknown-stage' : variables.new == {none} ? 'label-removed' : (variables.old == {none} || variables.order[variables.new] > variables.order[variables.old]) ? 'skip' : 'regression')",
            none = lit(NONE)
        );
        let allowed = "(variables.old in variables.next ? (size(variables.next[variables.old]) == 0 ? 'none (final stage)' : variables.next[variables.old].map(s, '\"' + s + '\"').join(', ')) : 'none from an unknown stage (a permitted override can set a known one)')";
        expression(
            &mut y,
            "      ",
            "messageExpression",
            &format!(
                "'stage change ' + {} + ' -> ' + {} + ' on ' + {WORKFLOW} + ' denied (' + {reason} + ') by pipeline ' + {} + ': allowed next: ' + {allowed}",
                quoted("old"),
                quoted("new"),
                lit(&p.name)
            ),
        );
        let actions = match p.mode {
            Mode::Enforce => "[\"Deny\"]",
            Mode::Warn => "[\"Warn\", \"Audit\"]",
        };
        binding(&mut y, &name, actions);
    }
    y
}
