//! The shells of the commands that see and steer Workflows (`history`, `audit`, `set`, `next`,
//! `rollback`, also `kubectl stage ...`): connect as kubectl would, read, ask the core, print. Every
//! way a command stops early is one line on stderr and an exit code: 1 for a move the cluster refused
//! (and for `audit`, findings), 2 for anything that kept the command from doing its job.

mod audit;
mod history;
mod moves;
mod next;
mod progress;
mod session;

use std::process::ExitCode;

use crate::cli::steer::SteerCommand;
use crate::cluster::failure::Failure;

/// How the user called the binary, for the commands it suggests: `stage-guard` or `kubectl stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    StageGuard,
    KubectlPlugin,
}

impl Program {
    pub fn as_str(self) -> &'static str {
        match self {
            Program::StageGuard => "stage-guard",
            Program::KubectlPlugin => "kubectl stage",
        }
    }
}

/// Why a command stopped before its job was done: one line, and the exit code.
#[derive(Debug)]
pub struct Stop {
    pub code: u8,
    pub message: String,
}

impl Stop {
    /// A usage, configuration or input error (exit 2).
    pub fn usage(message: impl Into<String>) -> Stop {
        Stop {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop {
            code: f.exit_code(),
            message: f.to_string(),
        }
    }
}

/// Runs one command to its exit code.
pub fn run(command: SteerCommand, program: Program) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", program.as_str());
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match command {
            SteerCommand::History(args) => history::run(args).await,
            SteerCommand::Audit(args) => audit::run(args, program).await,
            SteerCommand::Set(args) => moves::set(args).await,
            SteerCommand::Rollback(args) => moves::rollback(args).await,
            SteerCommand::Next(args) => next::run(args, program).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(stop) => {
            eprintln!("{}: {}", program.as_str(), stop.message);
            ExitCode::from(stop.code)
        }
    }
}
