//! `testenv`: build and start stage-guard's test control plane by hand.

use anyhow::Result;
use clap::{Parser, Subcommand};
use stage_guard_testenv::gobuild::{ARGO, CONTROL_PLANE, HELM};
use stage_guard_testenv::{ControlPlane, Options, USERS};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "testenv",
    about = "The real kube-apiserver + etcd (and Argo) that stage-guard's end-to-end tests run against",
    after_help = "Examples:
  cargo run -p stage-guard-testenv -- build            # everything the tests need, built or reused
  cargo run -p stage-guard-testenv -- build --only control-plane
  cargo run -p stage-guard-testenv -- build --only helm
  cargo run -p stage-guard-testenv -- up               # start a control plane, print kubeconfigs
  KUBECONFIG=/tmp/cp/kubeconfig/alice.yaml kubectl get workflows"
)]
struct Args {
    #[command(subcommand)]
    command: Job,
}

#[derive(Subcommand)]
enum Job {
    /// Build (or reuse from the cache) what the tests need: kube-apiserver and etcd, Argo's CLI
    /// and workflow-controller, Helm's CLI, and kubernetes-validate in a virtual environment;
    /// print where.
    Build {
        /// Only this part.
        #[arg(long, value_enum)]
        only: Option<Part>,
    },
    /// Start etcd and kube-apiserver on loopback, print one kubeconfig per user, and run until
    /// Ctrl-C or SIGTERM, which stop both.
    Up {
        /// Keep the control plane's files (PKI, kubeconfigs, logs, audit log) here instead of in a
        /// temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    ControlPlane,
    Argo,
    Helm,
    KubernetesValidate,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("testenv: {e:#}");
        std::process::exit(2);
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Job::Build { only } => {
            let wanted = |part| only.is_none_or(|o| o == part);
            if wanted(Part::ControlPlane) {
                println!("control plane: {}", CONTROL_PLANE.ensure_built()?.display());
            }
            if wanted(Part::Argo) {
                println!("argo: {}", ARGO.ensure_built()?.display());
            }
            if wanted(Part::Helm) {
                println!("helm: {}", HELM.ensure_built()?.display());
            }
            if wanted(Part::KubernetesValidate) {
                println!(
                    "kubernetes-validate: {}",
                    stage_guard_testenv::tools::kubernetes_validate()?.display()
                );
            }
            Ok(())
        }
        Job::Up { dir } => up(dir),
    }
}

fn up(dir: Option<PathBuf>) -> Result<()> {
    eprintln!("testenv: starting etcd and kube-apiserver ...");
    let cp = ControlPlane::start(Options {
        dir,
        ..Options::default()
    })?;
    println!(
        "kube-apiserver {} (files in {})",
        cp.url(),
        cp.dir().display()
    );
    for user in USERS {
        println!(
            "  {:<16} {:<42} KUBECONFIG={}",
            user.key,
            user.name,
            cp.kubeconfig(user.key)?.display()
        );
    }
    println!("audit log: {}", cp.dir().join("audit.log").display());
    println!("Ctrl-C stops it.");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait_for_signal())?;
    eprintln!("testenv: stopping");
    cp.stop();
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
