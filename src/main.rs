//! `stage-guard`: parses the command line, dispatches, and maps results to exit codes
//! (0 allowed / success, 1 denied / runtime failure, 2 usage, configuration or input error).

#![forbid(unsafe_code)]
// A request must never be able to panic the process (SPEC 5): no unwrap or expect outside tests
// (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use stage_guard::admission::pipeline::{self, ClusterAnswer, PipelineError, Requester};
use stage_guard::certs;
use stage_guard::cli::steer::{self as steer_cli, KubectlStage};
use stage_guard::cli::{
    CertsArgs, CheckArgs, Cli, Command, ConfigCommand, DefaultServe, GraphArgs, GraphFormat,
    MonitorArgs, ReviewArgs, ReviewOperation, ServeArgs, TestArgs,
};
use stage_guard::config::{DEFAULT_CONFIG_YAML, effective_yaml};
use stage_guard::core::{Operation, Policy, plural};
use stage_guard::diagram;
use stage_guard::monitor::{Monitor, MonitorOptions, Scope};
use stage_guard::server::{self, ServeOptions, Server};
use stage_guard::steer::{self, Program};
use stage_guard::suite::Suite;

/// jemalloc returns what a burst of large reviews freed within seconds (SPEC 11: under 30 MiB idle);
/// glibc's malloc kept it. Its purging options are compiled in (.cargo/config.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXIT_DENIED: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // Installed or linked as `kubectl-stage`, the binary is the kubectl plugin `kubectl stage`.
    if std::env::args_os()
        .next()
        .is_some_and(|argv0| steer_cli::invoked_as_plugin(&argv0))
    {
        return steer::run(KubectlStage::parse().command, Program::KubectlPlugin);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Monitor(args)) => monitor(args),
        None => match DefaultServe::try_parse_from(["stage-guard"]) {
            // Reads the STAGE_GUARD_* environment like `serve` would.
            Ok(DefaultServe { args }) => serve(args),
            Err(e) => e.exit(),
        },
        Some(Command::Check(args)) => check(args),
        Some(Command::Review(args)) => review(args),
        Some(Command::Config(ConfigCommand::Check { file })) => config_check(&file),
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{DEFAULT_CONFIG_YAML}");
            ExitCode::SUCCESS
        }
        Some(Command::Certs(args)) => make_certs(args),
        Some(Command::Graph(args)) => graph(args),
        Some(Command::Test(args)) => run_suites(args),
        Some(Command::Steer(command)) => steer::run(command, Program::StageGuard),
        Some(Command::Vap(args)) => match Policy::load(args.config.as_deref()) {
            Ok(p) => {
                print!("{}", stage_guard::vap::policies(&p));
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        },
    }
}

/// Prints a usage or configuration error and returns exit code 2.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("stage-guard: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// The configuration, or exit code 2 with its error (which names the file, and where it can, the
/// line and column).
fn load_policy(path: Option<&Path>) -> Result<Policy, ExitCode> {
    Policy::load(path).map_err(usage_error)
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{flag} must be a non-negative number of seconds, got {value}"))
}

/// What a long-running command runs with, logged once it has started: the file, the label, the
/// pipelines, and the configuration's warnings (stages no entry reaches).
fn log_configuration(config: Option<&Path>, policy: &Policy) {
    tracing::info!(
        config = %config.map_or("(embedded default)".into(), |p| p.display().to_string()),
        label = %policy.label,
        pipelines = %summary(policy),
        "configuration loaded"
    );
    for warning in &policy.warnings {
        tracing::warn!(%warning, "configuration");
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(e) = stage_guard::logging::init(args.log.log_format, args.log.log_level.as_deref()) {
        return usage_error(e);
    }
    let policy = match load_policy(args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (shutdown_delay, shutdown_grace) = match (
        seconds("--shutdown-delay", args.shutdown_delay),
        seconds("--shutdown-grace", args.shutdown_grace),
    ) {
        (Ok(d), Ok(g)) => (d, g),
        (Err(e), _) | (_, Err(e)) => return usage_error(e),
    };
    let header_timeout = match seconds("--header-timeout", args.header_timeout) {
        Ok(t) if !t.is_zero() => t,
        Ok(_) => return usage_error("--header-timeout must be more than 0 seconds"),
        Err(e) => return usage_error(e),
    };
    if args.max_body_bytes == 0 {
        return usage_error("--max-body-bytes must be at least 1");
    }
    let (listen, admin_listen) = match (args.listen.parse(), args.admin_listen.parse()) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) => return usage_error(format!("--listen {e}")),
        (_, Err(e)) => return usage_error(format!("--admin-listen {e}")),
    };
    let opts = ServeOptions {
        listen,
        admin_listen,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        client_ca_file: args.client_ca_file,
        dev_cert_dir: args.dev_cert_dir,
        max_body_bytes: args.max_body_bytes,
        shutdown_delay,
        shutdown_grace,
        max_connections: args.max_connections,
        header_timeout,
    };
    log_configuration(args.config.as_deref(), &policy);
    run_until_signalled(
        None,
        "server",
        || Server::bind(opts, policy),
        |server, signals| server.run(signals.first()),
    )
}

/// The shell of the two long-running commands, `serve` and `monitor`: a runtime (`worker_threads`,
/// else one per core), the signal handlers, the start (its error one line and exit 2, like every
/// other start-up error: a log line beside it would say it twice), then the run until the first
/// signal.
fn run_until_signalled<S, E, Started, Ran>(
    worker_threads: Option<usize>,
    what: &str,
    start: impl FnOnce() -> Started,
    run: impl FnOnce(S, server::ShutdownSignals) -> Ran,
) -> ExitCode
where
    E: std::fmt::Display,
    Started: Future<Output = Result<S, E>>,
    Ran: Future<Output = std::io::Result<()>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stage-guard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match server::ShutdownSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("stage-guard: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let service = match start().await {
            Ok(s) => s,
            Err(e) => return usage_error(e),
        };
        match run(service, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn monitor(args: MonitorArgs) -> ExitCode {
    if let Err(e) = stage_guard::logging::init(args.log.log_format, args.log.log_level.as_deref()) {
        return usage_error(e);
    }
    let policy = match load_policy(args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let refresh_interval = match seconds("--refresh-interval", args.refresh_interval) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return usage_error("--refresh-interval must be more than 0 seconds"),
        Err(e) => return usage_error(e),
    };
    let admin_listen = match args.admin_listen.parse() {
        Ok(a) => a,
        Err(e) => return usage_error(format!("--admin-listen {e}")),
    };
    if args.namespace.trim().is_empty() {
        return usage_error("--namespace needs a namespace, or all");
    }
    let opts = MonitorOptions {
        admin_listen,
        connection: stage_guard::cluster::client::Connection {
            kubeconfig: args.kubeconfig,
            context: args.context,
            namespace: None,
        },
        scope: Scope::parse(&args.namespace),
        refresh_interval,
    };
    log_configuration(args.config.as_deref(), &policy);
    // The monitor is light: two worker threads, whatever the node's core count.
    run_until_signalled(
        Some(2),
        "monitor",
        || Monitor::start(opts, policy),
        |monitor, signals| monitor.run(signals.first()),
    )
}

fn check(args: CheckArgs) -> ExitCode {
    let policy = match load_policy(args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.create && args.from.is_some() {
        return usage_error(
            "--create judges a new object: it has no stored stage, so --from must be omitted",
        );
    }
    let labels = match parse_labels(&args.labels) {
        Ok(l) => l,
        Err(e) => return usage_error(e),
    };
    let (old, new) = pipeline::change_objects(
        &policy,
        &pipeline::Change {
            name: "(offline check)",
            namespace: args.namespace.as_deref(),
            labels: &labels,
            new_labels: None,
            from: args.from.as_deref(),
            to: args.to.as_deref(),
            override_reason: args.override_reason.as_deref(),
        },
    );
    let (operation, old) = if args.create {
        (Operation::Create, None)
    } else {
        (Operation::Update, Some(&old))
    };
    let requester = Requester {
        username: args.user,
        groups: args.groups,
    };
    let review = pipeline::review_of(operation, &requester, old, &new);
    match pipeline::run(&policy, &review, SystemTime::now()) {
        Ok(answer) => {
            let record = &answer.validate.record;
            println!("{}", record.message);
            print_warnings(&answer);
            decision_exit(&answer)
        }
        Err(e) => usage_error(e),
    }
}

/// `--label KEY=VALUE` flags as pairs.
fn parse_labels(given: &[String]) -> Result<Vec<(String, String)>, String> {
    given
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--label {l:?}: write KEY=VALUE"))
        })
        .collect()
}

/// The warnings both webhooks gave, as kubectl would print them.
fn print_warnings(answer: &ClusterAnswer) {
    for body in [&answer.mutate.body, &answer.validate.body] {
        let warnings = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.pointer("/response/warnings").cloned());
        for w in warnings
            .iter()
            .flat_map(|w| w.as_array().into_iter().flatten())
        {
            eprintln!("warning: {}", w.as_str().unwrap_or_default());
        }
    }
}

fn decision_exit(answer: &ClusterAnswer) -> ExitCode {
    if answer.validate.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    }
}

fn review(args: ReviewArgs) -> ExitCode {
    let policy = match load_policy(args.config.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let now = SystemTime::now();
    let (answer, source) = match (&args.input, &args.new) {
        (Some(input), _) => {
            let mut body = Vec::new();
            let read = if input.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut body).map(|_| ())
            } else {
                std::fs::read(input).map(|b| body = b)
            };
            if let Err(e) = read {
                return usage_error(format!("cannot read {}: {e}", input.display()));
            }
            (
                pipeline::run_body(&policy, &body, now),
                input.display().to_string(),
            )
        }
        (None, Some(new_file)) => {
            let new = match read_object(new_file) {
                Ok(v) => v,
                Err(e) => return usage_error(e),
            };
            let old = match args.old.as_deref().map(read_object).transpose() {
                Ok(v) => v,
                Err(e) => return usage_error(e),
            };
            let operation = match (args.operation, &old) {
                (Some(ReviewOperation::Create), _) => Operation::Create,
                (Some(ReviewOperation::Update), Some(_)) | (None, Some(_)) => Operation::Update,
                (Some(ReviewOperation::Update), None) => {
                    return usage_error(
                        "--operation UPDATE needs the stored object: give --old FILE",
                    );
                }
                (None, None) => Operation::Create,
            };
            let requester = Requester {
                username: args.user.clone(),
                groups: args.groups.clone(),
            };
            let review = pipeline::review_of(operation, &requester, old.as_ref(), &new);
            (
                pipeline::run(&policy, &review, now),
                new_file.display().to_string(),
            )
        }
        (None, None) => return usage_error("give an AdmissionReview FILE, or --new FILE"),
    };
    match answer {
        Ok(answer) => {
            let shown = if args.mutate {
                &answer.mutate
            } else {
                &answer.validate
            };
            println!("{}", String::from_utf8_lossy(&shown.body));
            decision_exit(&answer)
        }
        Err(PipelineError::BadReview(e)) => usage_error(format!("{source}: {e}")),
        Err(e) => {
            eprintln!("stage-guard: {source}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A Workflow from a YAML or JSON file (JSON is YAML).
fn read_object(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        format!(
            "{}: not a YAML or JSON object: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    if !value.is_object() {
        return Err(format!("{}: not a YAML or JSON object", path.display()));
    }
    Ok(value)
}

/// A one-line verdict as a YAML comment, then the effective configuration: the whole output is a
/// configuration file that checks to the same policy.
fn config_check(file: &Path) -> ExitCode {
    match Policy::from_file(file) {
        Ok(p) => {
            println!("# {}: ok ({})", file.display(), summary(&p));
            for warning in &p.warnings {
                println!("# warning: {warning}");
                eprintln!("warning: {}: {warning}", file.display());
            }
            print!("{}", effective_yaml(&p));
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(e),
    }
}

/// One pipeline in a few words: `3 stages, 2 edges, entry: a, mode: enforce`.
fn pipeline_summary(p: &stage_guard::core::Pipeline) -> String {
    let g = &p.graph;
    let edges: usize = g
        .stages()
        .iter()
        .map(|s| g.next_stages(Some(s)).len())
        .sum();
    format!(
        "{}, {}, entry: {}, mode: {}",
        plural(g.stages().len(), "stage"),
        plural(edges, "edge"),
        g.entry_stages().join(", "),
        p.mode.as_str()
    )
}

/// The whole configuration in a line: the one graph's summary, or each pipeline's.
fn summary(p: &Policy) -> String {
    match p.pipelines.as_slice() {
        [only] if only.name == stage_guard::core::DEFAULT_PIPELINE => pipeline_summary(only),
        all => {
            let each: Vec<String> = all
                .iter()
                .map(|q| format!("{}: {}", q.name, pipeline_summary(q)))
                .collect();
            format!("{}; {}", plural(all.len(), "pipeline"), each.join("; "))
        }
    }
}

/// The suite files `paths` name: files as given, folders' `*.yaml`/`*.yml` files in name order.
fn suite_files(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{}: no *.yaml or *.yml suites in it",
                    path.display()
                ));
            }
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or folder", path.display()));
        }
    }
    Ok(files)
}

/// `stage-guard test`: a line per case, then the summary; exit 0 all pass, 1 a failure, 2 a
/// malformed suite or configuration.
fn run_suites(args: TestArgs) -> ExitCode {
    let files = match suite_files(&args.paths) {
        Ok(f) => f,
        Err(e) => return usage_error(e),
    };
    let now = SystemTime::now();
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for file in &files {
        let suite = match Suite::load(file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("stage-guard: {e}");
                broken += 1;
                continue;
            }
        };
        let policy = match Policy::load(suite.config.as_deref().or(args.config.as_deref())) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("stage-guard: {}: {e}", file.display());
                broken += 1;
                continue;
            }
        };
        for case in &suite.cases {
            match case.run(&policy, now) {
                Ok(got) if case.passes(&got) => {
                    passed += 1;
                    println!(
                        "PASS  {}: {}: {}",
                        file.display(),
                        case.name,
                        got.describe()
                    );
                }
                Ok(got) => {
                    failed += 1;
                    println!(
                        "FAIL  {}: {}: expected {}, got {}: {}",
                        file.display(),
                        case.name,
                        case.expected(),
                        got.describe(),
                        got.message
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL  {}: {}: {e}", file.display(), case.name);
                }
            }
        }
    }
    println!(
        "{} in {}: {passed} passed, {failed} failed{}",
        plural(passed + failed, "case"),
        plural(files.len(), "file"),
        if broken > 0 {
            format!(", {} not run", plural(broken, "malformed file"))
        } else {
            String::new()
        }
    );
    match (broken, failed) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// `stage-guard graph`: the pipelines' graphs on stdout.
fn graph(args: GraphArgs) -> ExitCode {
    let policy = match Policy::load(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    let chosen: Vec<&stage_guard::core::Pipeline> = match &args.pipeline {
        Some(name) => match policy.pipeline(name) {
            Some(p) => vec![p],
            None => {
                let names: Vec<&str> = policy.pipelines.iter().map(|p| p.name.as_str()).collect();
                return usage_error(format!(
                    "no pipeline {name:?} (the configuration has: {})",
                    names.join(", ")
                ));
            }
        },
        None => policy.pipelines.iter().collect(),
    };
    let format = match args.format {
        GraphFormat::Text => diagram::Format::Text,
        GraphFormat::Mermaid => diagram::Format::Mermaid,
        GraphFormat::Dot => diagram::Format::Dot,
    };
    print!("{}", diagram::draw(&chosen, format));
    ExitCode::SUCCESS
}

fn make_certs(args: CertsArgs) -> ExitCode {
    let mut sans = certs::service_dns_names(&args.service, &args.namespace);
    sans.extend(args.sans.iter().cloned());
    let step = match (args.new_ca, args.drop_old_ca) {
        (true, _) => certs::Step::NewCa,
        (_, true) => certs::Step::DropOldCa,
        _ => certs::Step::Serving,
    };
    match certs::run_step(&args.out, step, &sans, SystemTime::now()) {
        Ok(outcome) => {
            for line in outcome.done.progress(&args.out, &sans) {
                eprintln!("{line}");
            }
            println!("{}", outcome.ca_bundle_base64());
            ExitCode::SUCCESS
        }
        Err(e) if e.is_io() => {
            eprintln!("stage-guard: {e}");
            ExitCode::FAILURE
        }
        Err(e) => usage_error(e),
    }
}
