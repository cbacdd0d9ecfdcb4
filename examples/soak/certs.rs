//! The serving certificate as a cluster mounts it: `stage-guard certs` issues a pair from one CA (the
//! client trusts that CA throughout), and the pair is laid out the way kubelet updates a mounted Secret
//! (`tls.crt -> ..data/tls.crt`, `..data -> ..<version>`, the `..data` link swapped atomically).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub struct SecretVolume {
    /// Where `stage-guard certs` keeps the CA and writes each new pair.
    issuer: PathBuf,
    /// The mounted directory the servers read.
    pub dir: PathBuf,
    bin: PathBuf,
    version: usize,
}

impl SecretVolume {
    /// Issues the first pair and mounts it.
    pub fn new(bin: &Path, work: &Path) -> anyhow::Result<SecretVolume> {
        let mut v = SecretVolume {
            issuer: work.join("issuer"),
            dir: work.join("secret"),
            bin: bin.to_owned(),
            version: 0,
        };
        std::fs::create_dir_all(&v.dir)?;
        v.rotate()?;
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), v.dir.join(f))?;
        }
        Ok(v)
    }

    pub fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(self.issuer.join("ca.crt")).context("reading the CA")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// A new serving pair from the same CA, swapped in as kubelet does; the previous version is
    /// removed afterwards, as kubelet removes it.
    pub fn rotate(&mut self) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(["certs", "--service", "stage-guard", "--namespace", "soak"])
            .args(["--san", "localhost", "--san", "127.0.0.1", "--out"])
            .arg(&self.issuer)
            .output()
            .context("running stage-guard certs")?;
        if !out.status.success() {
            bail!(
                "stage-guard certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.version += 1;
        let name = format!("..soak_v{}", self.version);
        let version_dir = self.dir.join(&name);
        std::fs::create_dir(&version_dir)?;
        for f in ["tls.crt", "tls.key"] {
            std::fs::copy(self.issuer.join(f), version_dir.join(f))?;
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data"))?;
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(format!("..soak_v{}", self.version - 1)))?;
        }
        Ok(())
    }
}
