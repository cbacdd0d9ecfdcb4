//! The commands that see and steer Workflows in a cluster (`history`, `audit`, `set`, `next`,
//! `rollback`). The same binary answers them as the kubectl plugin `kubectl stage` when it is
//! installed or linked as `kubectl-stage`; they take kubectl's connection flags.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The plugin's program name: `kubectl stage` finds `kubectl-stage` on PATH.
pub const PLUGIN_FILE: &str = "kubectl-stage";

/// Run as `kubectl stage ...`: kubectl executes the plugin with its path as argv[0].
pub fn invoked_as_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(PLUGIN_FILE))
}

/// `kubectl stage`: the steering commands alone.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl stage",
    bin_name = "kubectl stage",
    version,
    about = "See and steer the stage of Argo Workflows guarded by stage-guard",
    long_about = "See and steer the stage of Argo Workflows guarded by stage-guard: a Workflow's stage \
        timeline, an audit of every Workflow against its pipeline, and safe moves (set, next, rollback) \
        that the cluster's webhooks judge.\n\nInstalled as kubectl-stage on PATH (a symlink to the \
        stage-guard binary). Flags come after the command: kubectl stage history NAME -n NS."
)]
pub struct KubectlStage {
    #[command(subcommand)]
    pub command: SteerCommand,
}

#[derive(Debug, Subcommand)]
pub enum SteerCommand {
    /// Show a Workflow's stage timeline: each change (from, to, when, by whom, override reason), how
    /// long it stayed, the current stage and for how long; exit 2 when it cannot be read
    #[command(after_help = "Examples:
  stage-guard history task-7 -n argo
  stage-guard history task-7 -o json | jq .changes
  kubectl stage history task-7 --context prod")]
    History(HistoryArgs),
    /// Check every Workflow against its pipeline (unknown stages, unreadable histories, histories that
    /// are no path of the graph, labels that disagree with the history, stuck Workflows); exit 0 clean,
    /// 1 findings, 2 errors
    #[command(after_help = "Examples:
  stage-guard audit -A
  stage-guard audit -n argo -l workflows.argoproj.io/workflow-template=pr-pipeline -o json
  kubectl stage audit -A --config stage-guard-config.yaml")]
    Audit(AuditArgs),
    /// Move a Workflow to STAGE the safe way: a merge patch conditional on the resourceVersion just
    /// read, retried on conflict; with --reason, a forced change through the override annotation.
    /// Prints the cluster's verdict and warnings; exit 0 moved (or already there), 1 refused, 2 errors
    #[command(after_help = "Examples:
  stage-guard set task-7 waiting-ready-for-qa -n argo
  stage-guard set task-7 waiting-pr-created --reason 'QA found a regression'
  kubectl stage set task-7 waiting-ready-for-qa")]
    Set(SetArgs),
    /// Print the stages a Workflow may move to from where it is, and those only a permitted override
    /// can force
    #[command(after_help = "Examples:
  stage-guard next task-7 -n argo
  kubectl stage next task-7")]
    Next(NextArgs),
    /// Move a Workflow back to a stage its history shows it was in, as a recorded forced change;
    /// exit 2 (nothing written) for a stage it never was in
    #[command(after_help = "Examples:
  stage-guard rollback task-7 --to waiting-pr-created --reason 'QA found a regression'
  kubectl stage rollback task-7 --to waiting-ready-for-qa --reason 're-test after revert'")]
    Rollback(RollbackArgs),
}

/// kubectl's connection flags, with kubectl's defaults, and the stage configuration.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else the in-cluster service
    /// account)
    #[arg(long, env = "STAGE_GUARD_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long, env = "STAGE_GUARD_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`)
    #[arg(short = 'n', long, env = "STAGE_GUARD_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// The stage configuration the cluster's stage-guard runs with (YAML; its ConfigMap's
    /// config.yaml); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The Workflow
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Output format
    #[arg(
        short = 'o',
        long,
        env = "STAGE_GUARD_OUTPUT",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: HistoryOutput,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Every namespace (instead of -n's)
    #[arg(short = 'A', long, env = "STAGE_GUARD_ALL_NAMESPACES")]
    pub all_namespaces: bool,
    /// Only the Workflows this label selector takes (`key=value,other!=x`, as kubectl's -l)
    #[arg(
        short = 'l',
        long,
        env = "STAGE_GUARD_SELECTOR",
        value_name = "SELECTOR"
    )]
    pub selector: Option<String>,
    /// Output format
    #[arg(
        short = 'o',
        long,
        env = "STAGE_GUARD_OUTPUT",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: AuditOutput,
    /// Workflows per list request (the list is read page by page, as kubectl's --chunk-size)
    #[arg(long, env = "STAGE_GUARD_CHUNK_SIZE", value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The Workflow
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The stage to move it to
    #[arg(value_name = "STAGE")]
    pub stage: String,
    /// Force the change through the override annotation, with this reason (recorded in the history;
    /// only users and groups the configuration's `override` lists may)
    #[arg(long, env = "STAGE_GUARD_REASON", value_name = "REASON")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// The Workflow
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The Workflow
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The stage to go back to: one its history shows it was in
    #[arg(long, env = "STAGE_GUARD_TO", value_name = "STAGE")]
    pub to: String,
    /// Why (recorded in the history as the forced change's reason)
    #[arg(long, env = "STAGE_GUARD_REASON", value_name = "REASON")]
    pub reason: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_plugin_command_line_is_well_formed() {
        KubectlStage::command().debug_assert();
    }

    #[test]
    fn the_plugin_is_recognised_by_its_file_name() {
        assert!(invoked_as_plugin(OsStr::new(
            "/usr/local/bin/kubectl-stage"
        )));
        assert!(invoked_as_plugin(OsStr::new("kubectl-stage")));
        assert!(!invoked_as_plugin(OsStr::new("/usr/bin/stage-guard")));
        assert!(!invoked_as_plugin(OsStr::new("kubectl-stage-old")));
    }

    fn parse(args: &[&str]) -> Result<SteerCommand, clap::Error> {
        let mut argv = vec!["kubectl-stage"];
        argv.extend_from_slice(args);
        KubectlStage::try_parse_from(argv).map(|k| k.command)
    }

    #[test]
    fn kubectl_flags_parse_as_kubectl_spells_them() {
        let Ok(SteerCommand::History(h)) = parse(&[
            "history",
            "task-7",
            "-n",
            "argo",
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
            "-o",
            "yaml",
        ]) else {
            panic!("history did not parse")
        };
        assert_eq!(h.name, "task-7");
        assert_eq!(h.cluster.namespace.as_deref(), Some("argo"));
        assert_eq!(h.cluster.context.as_deref(), Some("prod"));
        assert_eq!(h.cluster.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(h.output, HistoryOutput::Yaml);
        let Ok(SteerCommand::Audit(a)) = parse(&["audit", "-A", "-l", "team=a", "--namespace=x"])
        else {
            panic!("audit did not parse")
        };
        assert!(a.all_namespaces);
        assert_eq!(a.selector.as_deref(), Some("team=a"));
        assert_eq!(a.chunk_size, 500);
        assert_eq!(a.output, AuditOutput::Table);
    }

    #[test]
    fn bad_arguments_are_refused() {
        // A rollback needs both the target and the reason; audit has no YAML; a page holds one at least.
        assert!(parse(&["rollback", "task-7", "--to", "a"]).is_err());
        assert!(parse(&["rollback", "task-7", "--reason", "r"]).is_err());
        assert!(parse(&["audit", "-o", "yaml"]).is_err());
        assert!(parse(&["audit", "--chunk-size", "0"]).is_err());
        assert!(parse(&["set", "task-7"]).is_err());
        // Not a steering command: the plugin only answers these.
        assert!(parse(&["serve"]).is_err());
        let Ok(SteerCommand::Set(s)) = parse(&["set", "task-7", "b", "--reason", "qa"]) else {
            panic!("set did not parse")
        };
        assert_eq!((s.stage.as_str(), s.reason.as_deref()), ("b", Some("qa")));
    }
}
