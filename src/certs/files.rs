//! Writing certificate files: whole or not at all, keys readable by their owner only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::CertError;

/// Who may read a file: keys are the owner's alone (0600), certificates anyone's (0644).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Private,
    Public,
}

impl Access {
    #[cfg(unix)]
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// One change to a certificate directory.
#[derive(Debug)]
pub enum Change {
    Write {
        path: PathBuf,
        contents: Vec<u8>,
        access: Access,
    },
    Remove {
        path: PathBuf,
    },
}

impl Change {
    pub fn write(path: PathBuf, contents: impl Into<Vec<u8>>, access: Access) -> Change {
        Change::Write {
            path,
            contents: contents.into(),
            access,
        }
    }
}

/// Creates `dir` if missing, then makes `changes` in order: an interrupted run leaves each file either as it
/// was or as it should be, and the order decides which combinations can be left behind.
pub fn apply(dir: &Path, changes: &[Change]) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|cause| CertError::CreateDir {
        path: dir.to_owned(),
        cause,
    })?;
    for change in changes {
        match change {
            Change::Write {
                path,
                contents,
                access,
            } => write_file(path, contents, *access)?,
            Change::Remove { path } => match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(cause) => {
                    return Err(CertError::Remove {
                        path: path.clone(),
                        cause,
                    });
                }
            },
        }
    }
    Ok(())
}

/// Writes a sibling and renames it into place, so a reader never sees a half-written file.
pub fn write_file(path: &Path, contents: &[u8], access: Access) -> Result<(), CertError> {
    let error = |cause| CertError::Write {
        path: path.to_owned(),
        cause,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(access.mode());
    }
    let mut file = options.open(&tmp).map_err(error)?;
    // `mode` applies only to new files; a leftover temporary file may have other permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(access.mode()))
            .map_err(error)?;
    }
    #[cfg(not(unix))]
    let _ = access;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_made_in_order_with_their_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let (key, cert) = (nested.join("tls.key"), nested.join("tls.crt"));
        // A leftover temporary file with loose permissions must not leak them.
        fs::create_dir_all(&nested).unwrap();
        fs::write(nested.join(".tls.key.tmp"), "old").unwrap();

        apply(
            &nested,
            &[
                Change::write(key.clone(), "key", Access::Private),
                Change::write(cert.clone(), "cert", Access::Public),
                Change::Remove {
                    path: nested.join("never-there"),
                },
            ],
        )
        .unwrap();

        assert_eq!(fs::read_to_string(&key).unwrap(), "key");
        assert_eq!(fs::read_to_string(&cert).unwrap(), "cert");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key), 0o600);
            assert_eq!(mode(&cert), 0o644);
        }
        let leftovers: Vec<_> = fs::read_dir(&nested)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        apply(&nested, &[Change::Remove { path: cert.clone() }]).unwrap();
        assert!(!cert.exists());
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "not a directory").unwrap();
        let error = apply(&blocker.join("certs"), &[]).unwrap_err();
        assert!(matches!(error, CertError::CreateDir { .. }), "{error:?}");
        assert!(error.is_io());
        assert!(
            error.to_string().contains(&*blocker.to_string_lossy()),
            "{error}"
        );
    }
}
