//! Finding the command-line tools the tests drive. A missing tool is an error that names it and
//! says how to get it: the tests fail with that message, they never skip.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The `kubernetes-validate` release the manifest tests validate with (its schemas go up to
/// Kubernetes 1.37).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// `name` from the environment variable `env` (a path) or else from `PATH`.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        // A variable that names no file is treated as absent, so the error says what to install.
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The real kubectl, from `$KUBECTL` or `PATH`.
pub fn kubectl() -> Result<PathBuf> {
    match find("kubectl", "KUBECTL") {
        Some(path) => Ok(path),
        None => bail!(
            "kubectl is missing: the tests drive the real kubectl and its kustomize (install kubectl 1.30+ on PATH, or set KUBECTL to its path)"
        ),
    }
}

/// The real `helm`, from `$HELM` or else the build of `tests/helm/` in the cache (built on first use).
/// A failure names the command that builds it.
pub fn helm() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HELM") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("HELM={} names no file", path.display());
        }
        return Ok(path);
    }
    crate::gobuild::HELM.binary("helm").context(
        "helm is missing and could not be built: the chart tests run the real helm, built from the Go \
         module in tests/helm/ by `cargo run -p stage-guard-testenv -- build --only helm`",
    )
}

/// The real `promtool` (Debian's `prometheus` package), from `$PROMTOOL`, `PATH`, or the cache where
/// `.ci/install-promtool` puts it (`~/.cache/stage-guard/promtool/promtool`); the first time, that
/// script is run here, so the test command alone sets everything up. A failure names the script.
pub fn promtool() -> Result<PathBuf> {
    if let Some(path) = find("promtool", "PROMTOOL") {
        return Ok(path);
    }
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let cached = crate::gobuild::cache_root()?.join("promtool/promtool");
    if cached.is_file() {
        return Ok(cached);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/install-promtool");
    eprintln!(
        "promtool: taking it out of Debian's prometheus package (.ci/install-promtool, once)"
    );
    let out = Command::new("bash")
        .arg(&script)
        .env("STAGE_GUARD_TESTENV_CACHE", crate::gobuild::cache_root()?)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if out.status.success() && cached.is_file() {
        return Ok(cached);
    }
    bail!(
        "promtool is missing: the monitoring tests run the real promtool of Debian's prometheus package, \
         and `bash .ci/install-promtool` could not put it into {} ({}); install the package, or set \
         PROMTOOL to a promtool",
        cached.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// `kubernetes-validate` from `$KUBERNETES_VALIDATE`, else from a virtual environment of its own in
/// the cache (`~/.cache/stage-guard/venv-kubernetes-validate-<version>/`), which is made with
/// `python3 -m venv` and pip the first time: never the system interpreter's packages.
pub fn kubernetes_validate() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return Ok(PathBuf::from(path));
    }
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());

    let venv = crate::gobuild::cache_root()?.join(format!(
        "venv-kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"
    ));
    let bin = venv.join("bin/kubernetes-validate");
    // Written last: a venv left half-made by an interrupted install is made again.
    let complete = venv.join("installed");
    if bin.is_file() && complete.is_file() {
        return Ok(bin);
    }
    let python = find("python3", "PYTHON").context(
        "python3 is missing: the manifest tests install kubernetes-validate into a virtual environment with it \
         (install Python 3.9+, or set KUBERNETES_VALIDATE to a kubernetes-validate binary)",
    )?;
    eprintln!(
        "testenv: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} into {} (once)",
        venv.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
        "pip install kubernetes-validate",
    )?;
    std::fs::write(&complete, KUBERNETES_VALIDATE_VERSION)?;
    Ok(bin)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
