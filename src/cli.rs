//! The command line (SPEC 7). Every flag has an environment twin `STAGE_GUARD_<FLAG>`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod steer;

#[derive(Debug, Parser)]
#[command(
    name = "stage-guard",
    version,
    about = "Admission webhook that keeps a Workflow's stage label on the configured stage graph",
    long_about = "Admission webhook that keeps a Workflow's stage label on the configured stage graph.\n\n\
        The validating webhook (/validate) rejects illegal jumps, regressions, unknown stages and label removal;\n\
        the mutating webhook (/mutate) stamps each change into an append-only history annotation.\n\
        Without a command, `serve` runs. Every flag has an environment twin STAGE_GUARD_<FLAG>\n\
        (for example --tls-cert-file and STAGE_GUARD_TLS_CERT_FILE)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server (the default)
    Serve(ServeArgs),
    /// Watch Workflows and export where they are as Prometheus gauges on the admin port: Workflows
    /// per pipeline and stage, the oldest one's time there, the stuck ones, the audit's findings
    #[command(after_help = "Examples:
  # every namespace, with the kubeconfig kubectl would use
  stage-guard monitor --config deploy/base/config.yaml
  # one namespace, another context, the metrics on a local port
  stage-guard monitor -n argo --context staging --admin-listen 127.0.0.1:9090
  curl -s 127.0.0.1:9090/metrics | grep -E '^stage_guard_(workflows|stage_oldest|audit)'

Needs list and watch on workflows.argoproj.io, nothing else (deploy/monitor has the ClusterRole).
Run one replica: two would export every count twice.")]
    Monitor(MonitorArgs),
    /// Print the cluster's verdict on one stage change, offline (both webhooks, as the API server calls
    /// them); exit 0 allowed, 1 denied, 2 usage or config error
    #[command(after_help = "Examples:
  stage-guard check --from waiting-pr-created --to waiting-pr-approved
  stage-guard check --create --to waiting-pr-created --user alice
  stage-guard check --config pipelines.yaml --label workflows.argoproj.io/workflow-template=qa \\
      --namespace argo --from testing --to implementing
  stage-guard check --config deploy/base/config.yaml --from waiting-pr-approved --to waiting-pr-created \\
      --user alice --override-reason 'QA found a regression'")]
    Check(CheckArgs),
    /// Answer a write as the cluster would: the mutating webhook, its patch applied, then the validating
    /// webhook; prints the AdmissionReview response; exit 0 allowed, 1 denied, 2 bad input
    #[command(after_help = "Examples:
  stage-guard review samples/validate-skip.json           # an AdmissionReview as the API server sends it
  stage-guard review --mutate samples/mutate-advance.json # the mutating webhook's response
  kubectl get wf task-7 -o yaml > old.yaml                # the stored Workflow ...
  sed 's/waiting-pr-created/waiting-pr-approved/' old.yaml > new.yaml
  stage-guard review --old old.yaml --new new.yaml --user alice --group qa")]
    Review(ReviewArgs),
    /// Check a configuration file, or print the embedded default
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run declarative test cases (YAML) through the cluster's pipeline, as the server answers them;
    /// exit 0 when all pass, 1 when one fails, 2 on a malformed file
    #[command(after_help = "Examples:
  stage-guard test deploy/examples/tests/                  # every *.yaml suite in the folder
  stage-guard test --config config.yaml my-cases.yaml     # a suite without a `config:` of its own

A suite:
  config: ../base/config.yaml        # optional, relative to the suite; else --config or the default
  cases:
    - name: a step advances
      labels: {workflows.argoproj.io/workflow-template: qa}   # the Workflow's other labels
      new_labels: {}                 # optional: the new object's, when the write changes them
      namespace: argo                # optional (default: default)
      from: waiting-pr-created       # omitted or null: no stage label
      to: waiting-ready-for-qa
      user: system:serviceaccount:argo:argo-workflow
      groups: [pipeline-admins]
      create: false
      override: \"QA re-run\"          # the override annotation's reason
      expect: allowed                # allowed | denied | warned
      reason: advance                # optional reason code")]
    Test(TestArgs),
    /// Print ValidatingAdmissionPolicies and bindings that enforce the stage rules in CEL inside the API
    /// server: defence in depth beside the webhooks, or a fallback where webhooks are not allowed
    #[command(after_help = "Examples:
  stage-guard vap --config deploy/base/config.yaml | kubectl apply -f -
  stage-guard vap --config pipelines.yaml > policies.yaml   # one policy per pipeline, plus the shared rules")]
    Vap(VapArgs),
    /// Draw each pipeline's stage graph (entries, finals and loops marked) as text, Mermaid or DOT
    #[command(after_help = "Examples:
  stage-guard graph                                        # the embedded default, as text
  stage-guard graph --config config.yaml --format mermaid  # every pipeline, for a README
  stage-guard graph --config config.yaml --pipeline qa-loop --format dot | dot -Tsvg > qa.svg")]
    Graph(GraphArgs),
    /// Make or rotate the webhook's certificates in a directory (CA, serving pair, caBundle) without a
    /// failed request; prints the caBundle; exit 2 when the directory's state does not allow the step
    #[command(after_help = CERTS_EXAMPLES)]
    Certs(CertsArgs),
    /// history, audit, set, next, rollback: see and steer Workflows in a cluster
    #[command(flatten)]
    Steer(steer::SteerCommand),
}

/// `serve`'s flags on their own: what runs when no command is given (they then come from the environment).
#[derive(Debug, Parser)]
#[command(name = "stage-guard")]
pub struct DefaultServe {
    #[command(flatten)]
    pub args: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Stage configuration (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Webhook listener (TLS): IP:PORT ([::]:8443 for IPv6) or HOST:PORT; a host name is resolved
    /// at start-up and every address it resolves to is bound, on the same port
    #[arg(
        long,
        env = "STAGE_GUARD_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: String,
    /// Admin listener (plain HTTP): /livez, /readyz, /metrics; IP:PORT or HOST:PORT as --listen
    #[arg(
        long,
        env = "STAGE_GUARD_ADMIN_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: String,
    /// Serving certificate (PEM, may hold the full chain); re-read when it changes
    #[arg(
        long,
        env = "STAGE_GUARD_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM)
    #[arg(
        long,
        env = "STAGE_GUARD_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA bundle (PEM) on the webhook listener
    #[arg(long, env = "STAGE_GUARD_CLIENT_CA_FILE", value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Where development certificates go when no cert files are given (relative to the working directory)
    #[arg(
        long,
        env = "STAGE_GUARD_DEV_CERT_DIR",
        value_name = "DIR",
        default_value = "certs/dev"
    )]
    pub dev_cert_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413
    #[arg(long, env = "STAGE_GUARD_MAX_BODY_BYTES", value_name = "N", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// After SIGTERM, keep serving this long (readiness off) so endpoints drain
    #[arg(
        long,
        env = "STAGE_GUARD_SHUTDOWN_DELAY",
        value_name = "SECS",
        default_value_t = 5.0
    )]
    pub shutdown_delay: f64,
    /// Then give in-flight requests at most this long
    #[arg(
        long,
        env = "STAGE_GUARD_SHUTDOWN_GRACE",
        value_name = "SECS",
        default_value_t = 20.0
    )]
    pub shutdown_grace: f64,
    /// Most concurrent webhook connections; at the limit, the connection idle longest is closed to
    /// admit a new one (never one with a request in flight)
    #[arg(
        long,
        env = "STAGE_GUARD_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// A request's headers must be complete this soon: the first request's counted from the TLS
    /// handshake, a later one's from its first byte; a connection that misses it is closed. Idle
    /// keep-alive connections are closed after 120 s without a request instead
    #[arg(
        long,
        env = "STAGE_GUARD_HEADER_TIMEOUT",
        value_name = "SECS",
        default_value_t = crate::server::DEFAULT_HEADER_TIMEOUT.as_secs_f64()
    )]
    pub header_timeout: f64,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Stage configuration (YAML), the webhook's: pipelines and stuck_after; the embedded default
    /// when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin listener (plain HTTP): /livez, /readyz (200 once the first list is counted), /metrics;
    /// IP:PORT or HOST:PORT
    #[arg(
        long,
        env = "STAGE_GUARD_ADMIN_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: String,
    /// Kubeconfig file, as kubectl's flag (else KUBECONFIG, ~/.kube/config, or the pod's service
    /// account)
    #[arg(long, env = "STAGE_GUARD_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context, as kubectl's flag (else the current context)
    #[arg(long, env = "STAGE_GUARD_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Watch the Workflows of this namespace, or of all namespaces
    #[arg(
        short = 'n',
        long,
        env = "STAGE_GUARD_NAMESPACE",
        value_name = "NS|all",
        default_value = "all"
    )]
    pub namespace: String,
    /// Recompute the gauges at least this often (ages grow without events); changes of a stage,
    /// labels or history are counted within a second anyway
    #[arg(
        long,
        env = "STAGE_GUARD_REFRESH_INTERVAL",
        value_name = "SECS",
        default_value_t = 15.0
    )]
    pub refresh_interval: f64,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The logging flags of the long-running commands (`serve`, `monitor`).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format
    #[arg(
        long,
        env = "STAGE_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace, off) or directives like stage_guard=debug,info;
    /// overrides RUST_LOG. Anything else is refused at start-up
    #[arg(long, env = "STAGE_GUARD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Args)]
pub struct VapArgs {
    /// Stage configuration (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Stage configuration for suites that name none (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Suite files, or folders whose *.yaml and *.yml files are suites
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Mermaid,
    Dot,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Stage configuration (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only this pipeline (`default` is the top-level graph); every pipeline when absent
    #[arg(long, env = "STAGE_GUARD_PIPELINE", value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Output format
    #[arg(
        long,
        env = "STAGE_GUARD_FORMAT",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub format: GraphFormat,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Stage on the stored object; omitted means no label
    #[arg(long, env = "STAGE_GUARD_FROM", value_name = "STAGE")]
    pub from: Option<String>,
    /// Stage on the incoming object; omitted means no label
    #[arg(long, env = "STAGE_GUARD_TO", value_name = "STAGE")]
    pub to: Option<String>,
    /// Judge a CREATE (there is no stored object, so --from must be omitted)
    #[arg(long, env = "STAGE_GUARD_CREATE")]
    pub create: bool,
    /// Requesting username (request.userInfo.username)
    #[arg(
        long,
        env = "STAGE_GUARD_USER",
        value_name = "USER",
        default_value = ""
    )]
    pub user: String,
    /// Requesting group; repeat for several
    #[arg(
        long = "group",
        env = "STAGE_GUARD_GROUP",
        value_name = "GROUP",
        value_delimiter = ','
    )]
    pub groups: Vec<String>,
    /// Request a forced change with this reason (the override annotation)
    #[arg(long, env = "STAGE_GUARD_OVERRIDE_REASON", value_name = "REASON")]
    pub override_reason: Option<String>,
    /// Another label of the Workflow (chooses its pipeline); repeat for several
    #[arg(
        long = "label",
        env = "STAGE_GUARD_LABEL",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// The Workflow's namespace (chooses its pipeline)
    #[arg(long, env = "STAGE_GUARD_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// Stage configuration (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Print the mutating webhook's response (default: the validating webhook's, to the patched write)
    #[arg(long, env = "STAGE_GUARD_MUTATE")]
    pub mutate: bool,
    /// Stage configuration (YAML); the embedded default when absent
    #[arg(long, env = "STAGE_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// AdmissionReview JSON file, or - for stdin (instead of --new)
    #[arg(value_name = "FILE|-", required_unless_present = "new", conflicts_with_all = ["new", "old"])]
    pub input: Option<PathBuf>,
    /// The stored Workflow (YAML or JSON), as `kubectl get -o yaml` prints it; omit for a CREATE
    #[arg(long, env = "STAGE_GUARD_OLD", value_name = "FILE")]
    pub old: Option<PathBuf>,
    /// The incoming Workflow (YAML or JSON): the object the client writes
    #[arg(long, env = "STAGE_GUARD_NEW", value_name = "FILE")]
    pub new: Option<PathBuf>,
    /// Requesting username, with --new
    #[arg(
        long,
        env = "STAGE_GUARD_USER",
        value_name = "USER",
        default_value = "",
        requires = "new"
    )]
    pub user: String,
    /// Requesting group, with --new; repeat for several
    #[arg(
        long = "group",
        env = "STAGE_GUARD_GROUP",
        value_name = "GROUP",
        value_delimiter = ',',
        requires = "new"
    )]
    pub groups: Vec<String>,
    /// CREATE or UPDATE, with --new (default: UPDATE when --old is given, else CREATE)
    #[arg(
        long,
        env = "STAGE_GUARD_OPERATION",
        value_name = "OP",
        value_enum,
        requires = "new"
    )]
    pub operation: Option<ReviewOperation>,
}

/// The operations `review --new` can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum ReviewOperation {
    Create,
    Update,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; exit 0 when valid, 2 with the key and the problem otherwise
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the embedded default configuration
    Default,
}

const CERTS_EXAMPLES: &str = "\
DIR holds ca.crt and ca.key (the CA), tls.crt and tls.key (the serving pair), ca-bundle
(the base64 caBundle, also printed on stdout) and, during a CA rotation, ca-previous.crt
(the CA being retired, still trusted). A CA already in DIR is reused; one that does not
parse, does not match its key or has expired is refused, never replaced.

Examples (apply after each step: kubectl apply -k deploy/overlays/static-certs):
  # install; later, the same command rotates the serving pair (the caBundle stays)
  stage-guard certs --service stage-guard --namespace stage-guard \\
      --out deploy/overlays/static-certs/certs

  # rotate the CA in three steps, each applied before the next
  stage-guard certs ... --new-ca       # 1: new CA, trusted beside the old one
  stage-guard certs ...                # 2: serving pair from the new CA; wait until
                                       #    every pod serves it (README: rotation)
  stage-guard certs ... --drop-old-ca  # 3: old CA leaves the caBundle";

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service
    #[arg(long, env = "STAGE_GUARD_SERVICE", value_name = "NAME")]
    pub service: String,
    /// Namespace of the Service
    #[arg(long, env = "STAGE_GUARD_NAMESPACE", value_name = "NS")]
    pub namespace: String,
    /// Directory of the CA, the serving pair and the caBundle (created if missing; a CA in it is reused)
    #[arg(long, env = "STAGE_GUARD_OUT", value_name = "DIR")]
    pub out: PathBuf,
    /// Extra subject alternative name, a DNS name or an IP address; repeat for several
    #[arg(
        long = "san",
        env = "STAGE_GUARD_SAN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub sans: Vec<String>,
    /// Start a CA rotation (step 1 of 3): a new CA, the current one kept in ca-previous.crt and still
    /// trusted; the serving pair is not re-issued
    #[arg(long, env = "STAGE_GUARD_NEW_CA", conflicts_with = "drop_old_ca")]
    pub new_ca: bool,
    /// Finish a CA rotation (step 3 of 3): the previous CA leaves the caBundle; refused while tls.crt is
    /// not signed by the new CA
    #[arg(long, env = "STAGE_GUARD_DROP_OLD_CA")]
    pub drop_old_ca: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_its_env_twin() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let want = format!("STAGE_GUARD_{}", long.to_uppercase().replace('-', "_"));
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(want.as_str()),
                    "--{long} of `{}`",
                    cmd.get_name()
                );
            }
            for sub in cmd.get_subcommands() {
                walk(sub);
            }
        }
        walk(&Cli::command());
    }
}
