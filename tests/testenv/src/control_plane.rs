//! A real control plane on loopback: etcd and kube-apiserver built from Go modules, with their
//! own PKI, RBAC, static-token users, an audit log, namespace `argo` and Argo's resource types.
//! There is no controller-manager, scheduler or kubelet: nothing is garbage-collected, Pods never
//! run, and namespaces are never finalised.

use crate::cli::Cli;
use crate::gobuild::CONTROL_PLANE;
use crate::pki::{Ca, Pair};
use crate::process::{Process, free_port};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BOOTSTRAP: &str = include_str!("../manifests/bootstrap.yaml");
const AUDIT_POLICY: &str = include_str!("../manifests/audit-policy.yaml");

/// How long etcd and kube-apiserver may take to become ready (about 5 s on an idle machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A user of the test cluster, authenticated by a static token.
pub struct UserSpec {
    /// Short name: the kubeconfig file and what tests call the user by.
    pub key: &'static str,
    /// The Kubernetes username.
    pub name: &'static str,
    pub groups: &'static [&'static str],
}

pub const ADMIN: &str = "admin";
pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const ARGO_WORKFLOW: &str = "argo-workflow";
pub const ARGO_CONTROLLER: &str = "argo-controller";

/// The users every test control plane has.
pub const USERS: &[UserSpec] = &[
    UserSpec {
        key: ADMIN,
        name: "admin",
        groups: &["system:masters"],
    },
    UserSpec {
        key: ALICE,
        name: "alice",
        groups: &["pipeline-admins"],
    },
    UserSpec {
        key: BOB,
        name: "bob",
        groups: &["developers"],
    },
    // A workflow step running kubectl under the service account `argo-workflow`.
    UserSpec {
        key: ARGO_WORKFLOW,
        name: "system:serviceaccount:argo:argo-workflow",
        groups: &["system:serviceaccounts", "system:serviceaccounts:argo"],
    },
    // The workflow-controller, as Argo installs it.
    UserSpec {
        key: ARGO_CONTROLLER,
        name: "system:serviceaccount:argo:argo",
        groups: &["system:serviceaccounts", "system:serviceaccounts:argo"],
    },
];

pub fn user_spec(key: &str) -> Result<&'static UserSpec> {
    USERS
        .iter()
        .find(|u| u.key == key)
        .with_context(|| format!("no test user {key:?}"))
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `host:port`s of webhooks that the API server presents a client certificate to (signed by
    /// the control plane's CA, CN `kube-apiserver-webhook-client`), through an
    /// AdmissionConfiguration kubeconfig whose users are named after them.
    pub webhook_client_cert_for: Vec<String>,
    /// Keep the files here instead of in a temporary directory.
    pub dir: Option<PathBuf>,
}

enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

pub struct ControlPlane {
    // Field order is drop order: the API server stops before etcd, the directory goes last.
    apiserver: Process,
    etcd: Process,
    url: String,
    ca: Ca,
    kubectl: PathBuf,
    dir: Dir,
}

impl ControlPlane {
    /// Builds (or reuses) the binaries, starts etcd and kube-apiserver, and applies the bootstrap
    /// manifests. Ports are picked free on 127.0.0.1; a start that loses a port race is retried.
    pub fn start(options: Options) -> Result<ControlPlane> {
        let bin_dir = CONTROL_PLANE.ensure_built()?;
        let kubectl = crate::tools::kubectl()?;
        let dir = match &options.dir {
            Some(path) => {
                std::fs::create_dir_all(path)?;
                Dir::Kept(path.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("stage-guard-control-plane-")
                    .tempdir()?,
            ),
        };
        let ca = Ca::new("stage-guard test control plane CA")?;
        write_files(dir.path(), &ca, &options)?;

        let mut last_error = None;
        for _attempt in 0..3 {
            match start_processes(dir.path(), &bin_dir, &options) {
                Ok((etcd, apiserver, url)) => {
                    let mut cp = ControlPlane {
                        apiserver,
                        etcd,
                        url,
                        ca,
                        kubectl,
                        dir,
                    };
                    cp.write_kubeconfigs()?;
                    cp.wait_ready()?;
                    cp.bootstrap()?;
                    return Ok(cp);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("control plane did not start")))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the API server's certificate and the webhook client certificate; tests
    /// can issue more from it.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("pki/ca.crt")
    }

    pub fn kubeconfig(&self, user: &str) -> Result<PathBuf> {
        let spec = user_spec(user)?;
        Ok(self
            .dir()
            .join("kubeconfig")
            .join(format!("{}.yaml", spec.key)))
    }

    pub fn token(&self, user: &str) -> Result<String> {
        Ok(token_of(user_spec(user)?))
    }

    /// The real kubectl as `user`, with a discovery cache of this control plane's own.
    pub fn kubectl(&self, user: &str) -> Result<Cli> {
        Ok(Cli::new(self.kubectl.clone())
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user)?)
            .arg("--cache-dir")
            .arg(self.dir().join("kube-cache")))
    }

    /// The audit log, one event per element (Metadata level, Argo's resources only).
    pub fn audit_events(&self) -> Result<Vec<Value>> {
        let path = self.dir().join("audit.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("audit line: {l}")))
            .collect()
    }

    pub fn apiserver(&self) -> &Process {
        &self.apiserver
    }

    pub fn etcd(&self) -> &Process {
        &self.etcd
    }

    /// Stops the API server, then etcd (bounded waits), keeping the directory if it was given.
    pub fn stop(mut self) {
        self.apiserver.stop(Duration::from_secs(15));
        self.etcd.stop(Duration::from_secs(15));
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        let dir = self.dir().join("kubeconfig");
        std::fs::create_dir_all(&dir)?;
        for user in USERS {
            let text = kubeconfig_yaml(&self.url, &self.ca_file(), user.key, &token_of(user));
            std::fs::write(dir.join(format!("{}.yaml", user.key)), text)?;
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.apiserver.exited() {
                bail!(
                    "kube-apiserver exited with {status}; last lines of {}:\n{}",
                    self.apiserver.log_path().display(),
                    self.apiserver.log_tail(30)
                );
            }
            let out = self
                .kubectl(ADMIN)?
                .args(["get", "--raw", "/readyz"])
                .timeout(Duration::from_secs(20))
                .run();
            if let Ok(out) = &out
                && out.success()
                && out.stdout.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "kube-apiserver not ready within {READY_TIMEOUT:?}; last lines of {}:\n{}",
                    self.apiserver.log_path().display(),
                    self.apiserver.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn bootstrap(&self) -> Result<()> {
        self.kubectl(ADMIN)?
            .args(["apply", "-f", "-"])
            .stdin(BOOTSTRAP)
            .ok()
            .context("apply the bootstrap manifests")?;
        self.kubectl(ADMIN)?
            .args([
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ])
            .ok()
            .context("wait for the CRDs")?;
        Ok(())
    }
}

fn token_of(user: &UserSpec) -> String {
    format!("stage-guard-test-token-{}", user.key)
}

fn kubeconfig_yaml(url: &str, ca_file: &Path, key: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: stage-guard-test
    cluster:
      server: {url}
      certificate-authority: {ca}
users:
  - name: {key}
    user:
      token: {token}
contexts:
  - name: {key}
    context:
      cluster: stage-guard-test
      user: {key}
      namespace: argo
current-context: {key}
",
        ca = ca_file.display()
    )
}

fn write_pair(dir: &Path, name: &str, pair: &Pair) -> Result<()> {
    std::fs::write(dir.join(format!("{name}.crt")), &pair.cert_pem)?;
    std::fs::write(dir.join(format!("{name}.key")), &pair.key_pem)?;
    Ok(())
}

/// The PKI, token file, audit policy and (for mutual TLS) admission configuration.
fn write_files(dir: &Path, ca: &Ca, options: &Options) -> Result<()> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    std::fs::write(pki.join("ca.crt"), ca.cert_pem())?;
    write_pair(
        &pki,
        "apiserver",
        &ca.issue_server(&[
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default.svc",
        ])?,
    )?;
    let (private, public) = crate::pki::signing_key()?;
    std::fs::write(pki.join("service-account.key"), private)?;
    std::fs::write(pki.join("service-account.pub"), public)?;

    // token,user,uid,"group1,group2"
    let tokens: String = USERS
        .iter()
        .map(|u| {
            format!(
                "{},{},uid-{},\"{}\"\n",
                token_of(u),
                u.name,
                u.key,
                u.groups.join(",")
            )
        })
        .collect();
    std::fs::write(dir.join("tokens.csv"), tokens)?;
    std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY)?;

    if !options.webhook_client_cert_for.is_empty() {
        let admission = dir.join("admission");
        std::fs::create_dir_all(&admission)?;
        let client = ca.issue_client("kube-apiserver-webhook-client", &[])?;
        write_pair(&admission, "webhook-client", &client)?;
        let users: String = options
            .webhook_client_cert_for
            .iter()
            .map(|host_port| {
                format!(
                    "  - name: \"{host_port}\"\n    user:\n      client-certificate: {crt}\n      client-key: {key}\n",
                    crt = admission.join("webhook-client.crt").display(),
                    key = admission.join("webhook-client.key").display(),
                )
            })
            .collect();
        let kubeconfig = admission.join("webhook-kubeconfig.yaml");
        std::fs::write(
            &kubeconfig,
            format!("apiVersion: v1\nkind: Config\nusers:\n{users}"),
        )?;
        let plugin = |name: &str| {
            format!(
                "  - name: {name}\n    configuration:\n      apiVersion: apiserver.config.k8s.io/v1\n      kind: WebhookAdmissionConfiguration\n      kubeConfigFile: {}\n",
                kubeconfig.display()
            )
        };
        std::fs::write(
            admission.join("admission-config.yaml"),
            format!(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
                plugin("ValidatingAdmissionWebhook"),
                plugin("MutatingAdmissionWebhook")
            ),
        )?;
    }
    Ok(())
}

fn start_processes(
    dir: &Path,
    bin_dir: &Path,
    options: &Options,
) -> Result<(Process, Process, String)> {
    let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
    let etcd_data = dir.join("etcd-data");
    if etcd_data.exists() {
        std::fs::remove_dir_all(&etcd_data)?;
    }
    let mut etcd_cmd = Command::new(bin_dir.join("etcd"));
    etcd_cmd
        .arg("--data-dir")
        .arg(&etcd_data)
        .arg(format!("--client-url=http://127.0.0.1:{client_port}"))
        .arg(format!("--peer-url=http://127.0.0.1:{peer_port}"));
    let mut etcd = Process::spawn("etcd", etcd_cmd, &dir.join("etcd.log"))?;
    etcd.wait_for_log(READY_TIMEOUT, |log| log.lines().any(|l| l == "ready"))?;

    let pki = dir.join("pki");
    let mut cmd = Command::new(bin_dir.join("kube-apiserver"));
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={secure_port}"))
        .arg(format!(
            "--tls-cert-file={}",
            pki.join("apiserver.crt").display()
        ))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.join("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-account-key-file={}",
            pki.join("service-account.pub").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            pki.join("service-account.key").display()
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/24")
        .arg("--authorization-mode=RBAC")
        .arg(format!(
            "--token-auth-file={}",
            dir.join("tokens.csv").display()
        ))
        .arg(format!(
            "--audit-policy-file={}",
            dir.join("audit-policy.yaml").display()
        ))
        .arg(format!(
            "--audit-log-path={}",
            dir.join("audit.log").display()
        ))
        // Written as each request completes, so a test can read its own events at once.
        .arg("--audit-log-mode=blocking")
        .arg(format!("--cert-dir={}", pki.display()))
        .arg("--profiling=false");
    if !options.webhook_client_cert_for.is_empty() {
        cmd.arg(format!(
            "--admission-control-config-file={}",
            dir.join("admission/admission-config.yaml").display()
        ));
    }
    let mut apiserver = Process::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))?;
    // A lost port race shows as an early exit; the caller retries with new ports.
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = apiserver.exited() {
        let tail = apiserver.log_tail(20);
        drop(etcd);
        bail!("kube-apiserver exited at start ({status}):\n{tail}");
    }
    Ok((etcd, apiserver, format!("https://127.0.0.1:{secure_port}")))
}
