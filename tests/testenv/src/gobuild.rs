//! Builds the Go tools the tests run (kube-apiserver, etcd, Argo, Helm) from the Go modules pinned in
//! `tests/apiserver/`, `tests/argo/` and `tests/helm/`, into a cache directory named after the pinned version,
//! and reuses that directory while its stamp (a hash of the module's pins, its mains and the Go
//! version) still matches.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// One binary of a Go module: the file name in the cache and the package that builds it.
pub struct Binary {
    pub name: &'static str,
    pub package: &'static str,
}

/// A Go module of the repository that builds test tools.
pub struct GoModule {
    /// The folder under `tests/` and the prefix of the cache directory.
    pub name: &'static str,
    /// The required module whose version names the cache directory.
    pub version_of: &'static str,
    pub binaries: &'static [Binary],
    /// `-ldflags` for a given version of `version_of`.
    pub ldflags: fn(&str) -> String,
    /// A file the upstream build creates before compiling: (path inside `version_of`'s module, contents).
    /// When set, the build compiles a writable copy of that module with the file added.
    pub generated_file: Option<(&'static str, &'static str)>,
    /// What a cold build costs, for the progress line.
    pub cold_build: &'static str,
}

/// etcd and kube-apiserver (`tests/apiserver/`).
pub const CONTROL_PLANE: GoModule = GoModule {
    name: "apiserver",
    version_of: "k8s.io/kubernetes",
    binaries: &[
        Binary {
            name: "etcd",
            package: "./cmd/etcd",
        },
        Binary {
            name: "kube-apiserver",
            package: "./cmd/kube-apiserver",
        },
    ],
    ldflags: kubernetes_ldflags,
    generated_file: None,
    cold_build: "about 5 minutes on 2 cores and 130 MB of Go modules",
};

/// Argo's CLI and workflow-controller (`tests/argo/`).
pub const ARGO: GoModule = GoModule {
    name: "argo",
    version_of: "github.com/argoproj/argo-workflows/v3",
    binaries: &[
        Binary {
            name: "argo",
            package: "github.com/argoproj/argo-workflows/v3/cmd/argo",
        },
        Binary {
            name: "workflow-controller",
            package: "github.com/argoproj/argo-workflows/v3/cmd/workflow-controller",
        },
    ],
    ldflags: argo_ldflags,
    // The CLI embeds the web UI (`//go:embed dist/app`), which the module does not ship; Argo's own
    // Makefile writes a placeholder index.html when it builds without the UI, and so does this.
    generated_file: Some((
        "ui/dist/app/index.html",
        "<!doctype html><title>Argo UI not built</title>\n",
    )),
    cold_build: "about 4 minutes on 2 cores and 370 MB of Go modules",
};

/// Helm's CLI (`tests/helm/`): lints and renders the chart, installs it into the test API server.
pub const HELM: GoModule = GoModule {
    name: "helm",
    version_of: "helm.sh/helm/v4",
    binaries: &[Binary {
        name: "helm",
        package: "helm.sh/helm/v4/cmd/helm",
    }],
    ldflags: helm_ldflags,
    generated_file: None,
    cold_build: "about 4 to 9 minutes on 2 cores and 115 MB of Go modules",
};

fn kubernetes_ldflags(version: &str) -> String {
    // Without these the server reports a development version and kubectl warns about skew.
    let (major, minor) = major_minor(version);
    let v = "k8s.io/component-base/version";
    format!(
        "-s -w -X {v}.gitVersion={version} -X {v}.gitMajor={major} -X {v}.gitMinor={minor} -X {v}.gitTreeState=clean"
    )
}

fn argo_ldflags(version: &str) -> String {
    let v = "github.com/argoproj/argo-workflows/v3";
    format!("-s -w -X {v}.version={version} -X {v}.gitTag={version} -X {v}.gitTreeState=clean")
}

fn helm_ldflags(version: &str) -> String {
    // Without the version Helm reports "v4.3" and no tree state.
    let v = "helm.sh/helm/v4/internal/version";
    format!("-s -w -X {v}.version={version} -X {v}.gitTreeState=clean")
}

fn major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("0").to_string();
    let minor = parts.next().unwrap_or("0").to_string();
    (major, minor)
}

/// The repository's root (this crate lives in `tests/testenv/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where built tools live: `$STAGE_GUARD_TESTENV_CACHE`, else `$XDG_CACHE_HOME/stage-guard`, else
/// `~/.cache/stage-guard`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STAGE_GUARD_TESTENV_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("stage-guard"));
    }
    let home = std::env::var_os("HOME").context("neither HOME nor XDG_CACHE_HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/stage-guard"))
}

impl GoModule {
    pub fn module_dir(&self) -> PathBuf {
        repo_root().join("tests").join(self.name)
    }

    /// The pinned version of `version_of`, read from the module's go.mod.
    pub fn version(&self) -> Result<String> {
        let go_mod = self.module_dir().join("go.mod");
        let text = std::fs::read_to_string(&go_mod)
            .with_context(|| format!("read {}", go_mod.display()))?;
        text.lines()
            .map(str::trim)
            .map(|l| l.trim_start_matches("require").trim())
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(self.version_of))
                    .then(|| words.next().map(str::to_string))
                    .flatten()
            })
            .with_context(|| format!("{} does not require {}", go_mod.display(), self.version_of))
    }

    /// The cache directory of the pinned version, for example `~/.cache/stage-guard/apiserver-v1.36.3`.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        Ok(cache_root()?.join(format!("{}-{}", self.name, self.version()?)))
    }

    /// The path of one built binary, building the module first when the cache does not hold it.
    pub fn binary(&self, name: &str) -> Result<PathBuf> {
        Ok(self.ensure_built()?.join(name))
    }

    /// Builds the module's binaries into its cache directory unless an up-to-date build is there;
    /// returns the directory. Safe to call from many tests at once: one builds, the others wait.
    pub fn ensure_built(&self) -> Result<PathBuf> {
        static BUILDING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());

        let dir = self.cache_dir()?;
        let go = go_binary()?;
        let stamp = self.stamp(&go)?;
        if self.is_current(&dir, &stamp) {
            return Ok(dir);
        }
        let version = self.version()?;
        let names: Vec<_> = self.binaries.iter().map(|b| b.name).collect();
        eprintln!(
            "testenv: building {} {version} from Go modules into {} (a cold build takes {}; later runs reuse it)",
            names.join(" and "),
            dir.display(),
            self.cold_build,
        );
        let started = Instant::now();
        let parent = dir.parent().context("cache directory has no parent")?;
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        // Build next to the final directory and rename it into place, so an interrupted build
        // never leaves a half-filled cache behind.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}-building-", self.name))
            .tempdir_in(parent)
            .with_context(|| format!("create a build directory in {}", parent.display()))?;
        self.build_into(&go, &version, staging.path())?;
        // The writable source copy and its go.mod were for the build only (-trimpath keeps
        // the binaries free of paths into them).
        for scratch in ["src", "build.mod", "build.sum"] {
            let path = staging.path().join(scratch);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
        std::fs::write(staging.path().join("stamp"), &stamp)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        let staging = staging.keep();
        std::fs::rename(&staging, &dir)
            .with_context(|| format!("move {} to {}", staging.display(), dir.display()))?;
        eprintln!(
            "testenv: built {} in {:.0} s",
            names.join(" and "),
            started.elapsed().as_secs_f64()
        );
        Ok(dir)
    }

    fn is_current(&self, dir: &Path, stamp: &str) -> bool {
        std::fs::read_to_string(dir.join("stamp")).is_ok_and(|s| s == stamp)
            && self.binaries.iter().all(|b| dir.join(b.name).is_file())
    }

    /// A hash of everything the build depends on that lives outside Go's own caches.
    fn stamp(&self, go: &Path) -> Result<String> {
        let module_dir = self.module_dir();
        let mut files = vec![module_dir.join("go.mod"), module_dir.join("go.sum")];
        let cmd = module_dir.join("cmd");
        if cmd.is_dir() {
            files.extend(files_under(&cmd)?);
        }
        let mut hash = Fnv64::new();
        for file in &files {
            hash.write(
                file.strip_prefix(&module_dir)
                    .unwrap_or(file)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hash.write(&std::fs::read(file).with_context(|| format!("read {}", file.display()))?);
        }
        hash.write(go_version(go)?.as_bytes());
        hash.write((self.ldflags)(&self.version()?).as_bytes());
        if let Some((path, contents)) = self.generated_file {
            hash.write(path.as_bytes());
            hash.write(contents.as_bytes());
        }
        Ok(format!("{:016x}\n", hash.finish()))
    }

    fn build_into(&self, go: &Path, version: &str, out: &Path) -> Result<()> {
        let module_dir = self.module_dir();
        let mut modfile = None;
        if let Some((path, contents)) = self.generated_file {
            modfile = Some(self.writable_copy_with(go, out, path, contents)?);
        }
        for binary in self.binaries {
            let mut cmd = Command::new(go);
            cmd.current_dir(&module_dir)
                .env("CGO_ENABLED", "0")
                .args(["build", "-trimpath", "-mod=readonly", "-ldflags"])
                .arg((self.ldflags)(version));
            if let Some(modfile) = &modfile {
                cmd.arg(format!("-modfile={}", modfile.display()));
            }
            cmd.arg("-o").arg(out.join(binary.name)).arg(binary.package);
            run_go(&mut cmd, &format!("go build {}", binary.package))?;
        }
        Ok(())
    }

    /// Copies `version_of`'s module out of the read-only module cache, adds the generated file, and
    /// writes a go.mod (beside the copy) that replaces the module with the copy.
    fn writable_copy_with(
        &self,
        go: &Path,
        out: &Path,
        path: &str,
        contents: &str,
    ) -> Result<PathBuf> {
        let module_dir = self.module_dir();
        run_go(
            Command::new(go)
                .current_dir(&module_dir)
                .args(["mod", "download", self.version_of]),
            &format!("go mod download {}", self.version_of),
        )?;
        let source = run_go(
            Command::new(go).current_dir(&module_dir).args([
                "list",
                "-m",
                "-f",
                "{{.Dir}}",
                self.version_of,
            ]),
            "go list -m",
        )?;
        let copy = out.join("src");
        copy_tree(Path::new(source.trim()), &copy)?;
        let generated = copy.join(path);
        std::fs::create_dir_all(generated.parent().context("generated file has no parent")?)?;
        std::fs::write(&generated, contents)?;

        let build_mod = out.join("build.mod");
        let go_mod = std::fs::read_to_string(module_dir.join("go.mod"))?;
        std::fs::write(
            &build_mod,
            format!(
                "{go_mod}\nreplace {} => {}\n",
                self.version_of,
                copy.display()
            ),
        )?;
        std::fs::copy(module_dir.join("go.sum"), out.join("build.sum"))?;
        Ok(build_mod)
    }
}

fn run_go(cmd: &mut Command, what: &str) -> Result<String> {
    let output = cmd.output().with_context(|| format!("run {what}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<_> = stderr.lines().rev().take(40).collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", output.status, tail.join("\n"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `go` from `$GO` or `PATH`.
pub fn go_binary() -> Result<PathBuf> {
    crate::tools::find("go", "GO").context(
        "the `go` command is missing: the real kube-apiserver, etcd, Argo and Helm are built from Go modules \
         (install Go 1.26 or newer, or set GO to its path)",
    )
}

fn go_version(go: &Path) -> Result<String> {
    run_go(
        Command::new(go).args(["env", "GOVERSION"]),
        "go env GOVERSION",
    )
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copy {}", entry.path().display()))?;
            // The module cache is read-only; the copy must not be, or it cannot be removed.
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`, so a new toolchain does not
/// throw away a 15-minute build.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_pinned_go_mod() {
        let v = CONTROL_PLANE.version().unwrap();
        assert!(v.starts_with("v1."), "{v}");
        let v = ARGO.version().unwrap();
        assert!(v.starts_with("v3.") || v.starts_with("v4."), "{v}");
        let v = HELM.version().unwrap();
        assert!(v.starts_with("v4."), "{v}");
    }

    #[test]
    fn helm_ldflags_name_the_pinned_version() {
        let flags = helm_ldflags("v4.3.2");
        assert!(
            flags.contains("helm.sh/helm/v4/internal/version.version=v4.3.2"),
            "{flags}"
        );
    }

    #[test]
    fn kubernetes_ldflags_carry_major_and_minor() {
        let flags = kubernetes_ldflags("v1.36.3");
        assert!(flags.contains("gitVersion=v1.36.3"), "{flags}");
        assert!(flags.contains("gitMajor=1 "), "{flags}");
        assert!(flags.contains("gitMinor=36 "), "{flags}");
    }

    #[test]
    fn the_hash_separates_its_inputs() {
        let mut a = Fnv64::new();
        a.write(b"ab");
        a.write(b"c");
        let mut b = Fnv64::new();
        b.write(b"a");
        b.write(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
