//! Running a command-line client (kubectl, argo) as one user of the test control plane, with a
//! bounded wait and its output kept for assertions.

use crate::process::wait_bounded;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long one client command may take before it is killed and the call fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Cli {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The stdout, or an error carrying the command and its stderr.
    pub fn ok(self) -> Result<String> {
        if !self.success() {
            bail!(
                "`{}` failed ({}):\n{}{}",
                self.command,
                self.status,
                self.stderr,
                self.stdout
            );
        }
        Ok(self.stdout)
    }
}

impl Cli {
    pub fn new(program: PathBuf) -> Cli {
        Cli {
            program,
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cli {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cli {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bytes written to the command's stdin (for `-f -`).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Cli {
        self.stdin = Some(input.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cli {
        self.timeout = timeout;
        self
    }

    pub fn command_line(&self) -> String {
        let mut words = vec![self.program.to_string_lossy().into_owned()];
        words.extend(self.args.iter().map(|a| a.to_string_lossy().into_owned()));
        words.join(" ")
    }

    /// Starts the command; [`Running::wait`] collects it. Many can run at once.
    pub fn spawn(&self) -> Result<Running> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start `{}`", self.command_line()))?;
        let mut stdin = child.stdin.take().context("stdin")?;
        if let Some(input) = &self.stdin {
            stdin.write_all(input).context("write stdin")?;
        }
        drop(stdin);
        Ok(Running {
            child,
            timeout: self.timeout,
            command: self.command_line(),
        })
    }

    /// Runs the command to completion, whatever its exit status.
    pub fn run(&self) -> Result<CliOutput> {
        self.spawn()?.wait()
    }

    /// Runs the command and returns its stdout; a non-zero exit is an error with its stderr.
    pub fn ok(&self) -> Result<String> {
        self.run()?.ok()
    }

    /// Runs the command and parses its stdout as JSON.
    pub fn json(&self) -> Result<Value> {
        let out = self.ok()?;
        serde_json::from_str(&out)
            .with_context(|| format!("`{}` did not print JSON: {out}", self.command_line()))
    }
}

pub struct Running {
    child: std::process::Child,
    timeout: Duration,
    command: String,
}

impl Running {
    pub fn wait(self) -> Result<CliOutput> {
        let out = wait_bounded(self.child, self.timeout, &format!("`{}`", self.command))?;
        Ok(CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command: self.command,
        })
    }
}
