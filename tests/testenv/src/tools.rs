//! Finding the command-line tools the tests drive. A missing tool is an error that names it and
//! says how to get it: the tests fail with that message, they never skip.

use anyhow::{Result, bail};
use std::path::PathBuf;

/// `name` from the environment variable `env` (a path) or else from `PATH`.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
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
            "kubectl is missing: the end-to-end tests drive the real kubectl (install it on PATH, or set KUBECTL to its path)"
        ),
    }
}
