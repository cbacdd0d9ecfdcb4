//! Certificate rotation without a restart (SPEC 6): the resolver that hands every handshake the
//! current serving pair, and the watch that swaps it when the files change (kubelet's `..data`
//! symlink swap included), keeping the last good pair when the new one is broken.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::MissedTickBehavior;

use crate::pem::{LoadedCert, PemError, parse_certified_key, read_error};

/// Serves the current pair to every handshake; [`watch_cert_files`] swaps it. Connections already open keep
/// the pair they started with.
#[derive(Debug)]
pub struct ReloadingCertResolver {
    current: RwLock<LoadedCert>,
}

impl ReloadingCertResolver {
    pub fn new(initial: LoadedCert) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// The serving leaf's notAfter, unix seconds.
    pub fn current_not_after(&self) -> i64 {
        self.read().not_after_unix
    }

    /// The chain and key new handshakes get.
    pub fn current_key(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// Makes `next` the pair for new handshakes.
    pub fn replace(&self, next: LoadedCert) {
        // The guarded value is replaced whole, so a poisoned lock still holds a consistent pair.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    fn read(&self) -> LoadedCert {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }
}

/// What [`watch_cert_files`] reports after each load attempt.
#[derive(Debug)]
pub enum ReloadEvent {
    Reloaded { not_after_unix: i64 },
    Failed { error: PemError },
}

/// Polls `cert` and `key` every `interval` until the future is dropped. When their bytes differ from the
/// pair last seen (loaded or refused), loads them: a good pair replaces the resolver's at once; a bad one is
/// logged and reported once, when a second poll finds the same bytes (the two files are read one after the
/// other, so a poll that falls inside an update can see a new certificate with the old key), and the last
/// good pair stays. The files are opened through their paths each time, which follows kubelet's atomic
/// `..data` symlink swap of a mounted Secret.
pub async fn watch_cert_files(
    resolver: Arc<ReloadingCertResolver>,
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    on_event: impl Fn(ReloadEvent) + Send + Sync + 'static,
) {
    // tokio's interval panics on zero.
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = CertWatch::new(cert, key);
    loop {
        ticker.tick().await;
        let read = read_pair(&watch.cert, &watch.key).await;
        if let Some(event) = watch.observe(read, &resolver) {
            on_event(event);
        }
    }
}

/// The decisions of [`watch_cert_files`], one poll at a time.
struct CertWatch {
    cert: PathBuf,
    key: PathBuf,
    /// The files as last loaded or reported as refused; `None` before the first poll.
    settled: Option<Observed>,
    /// Refused files seen once, not reported yet.
    suspect: Option<Observed>,
}

/// The files' contents at one poll, or why they could not be read.
#[derive(PartialEq, Eq)]
enum Observed {
    Files(Vec<u8>, Vec<u8>),
    Unreadable(String),
}

impl CertWatch {
    fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self {
            cert,
            key,
            settled: None,
            suspect: None,
        }
    }

    fn observe(
        &mut self,
        read: Result<(Vec<u8>, Vec<u8>), PemError>,
        resolver: &ReloadingCertResolver,
    ) -> Option<ReloadEvent> {
        let observed = match &read {
            Ok((cert_pem, key_pem)) => Observed::Files(cert_pem.clone(), key_pem.clone()),
            Err(e) => Observed::Unreadable(e.to_string()),
        };
        if self.settled.as_ref() == Some(&observed) {
            self.suspect = None;
            return None;
        }
        let first = self.settled.is_none();
        let loaded = read.and_then(|(cert_pem, key_pem)| {
            parse_certified_key(&self.cert, &cert_pem, &self.key, &key_pem)
        });
        match loaded {
            // The files still hold the pair the server started with: nothing to reload.
            Ok(loaded) if first && loaded.key.cert == resolver.current_key().cert => {
                self.settle(observed);
                None
            }
            Ok(loaded) => {
                self.settle(observed);
                let not_after_unix = loaded.not_after_unix;
                resolver.replace(loaded);
                tracing::info!(
                    cert = %self.cert.display(),
                    not_after = %format_unix(not_after_unix),
                    "TLS certificate reloaded"
                );
                // Served anyway: refusing it would leave the previous one, which is older still.
                if not_after_unix < unix_now() {
                    tracing::warn!(
                        cert = %self.cert.display(),
                        not_after = %format_unix(not_after_unix),
                        "the reloaded TLS certificate has already expired"
                    );
                }
                Some(ReloadEvent::Reloaded { not_after_unix })
            }
            Err(error) if self.suspect.as_ref() == Some(&observed) => {
                self.settle(observed);
                tracing::error!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    error = %error,
                    "TLS certificate reload refused; keeping the previous certificate"
                );
                Some(ReloadEvent::Failed { error })
            }
            Err(_) => {
                self.suspect = Some(observed);
                None
            }
        }
    }

    fn settle(&mut self, observed: Observed) {
        self.settled = Some(observed);
        self.suspect = None;
    }
}

async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), PemError> {
    let cert_pem = tokio::fs::read(cert)
        .await
        .map_err(|e| read_error(cert, e))?;
    let key_pem = tokio::fs::read(key).await.map_err(|e| read_error(key, e))?;
    Ok((cert_pem, key_pem))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn format_unix(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        Err(_) => format!("{secs} (unix seconds)"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::certs::{self, CertBundle};
    use crate::pem::load_certified_key;
    use crate::server::tls::server_config;
    use crate::test_tls::*;

    fn bundle(san: &str) -> CertBundle {
        certs::generate_bundle(&[san.to_owned()]).unwrap()
    }

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn resolver_for(b: &CertBundle) -> Arc<ReloadingCertResolver> {
        let loaded = parse_certified_key(
            Path::new("tls.crt"),
            b.cert_pem.as_bytes(),
            Path::new("tls.key"),
            b.key_pem.as_bytes(),
        )
        .unwrap();
        Arc::new(ReloadingCertResolver::new(loaded))
    }

    /// kubelet's layout for a mounted Secret: `..data` points at a timestamped directory and each key is a
    /// symlink through `..data`; an update writes a new directory and renames a new `..data` over the old.
    #[cfg(unix)]
    fn kubelet_publish(dir: &Path, version: &str, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::symlink;
        let previous = std::fs::read_link(dir.join("..data")).ok();
        let target = dir.join(version);
        std::fs::create_dir(&target).unwrap();
        write(&target, "tls.crt", cert_pem.as_bytes());
        write(&target, "tls.key", key_pem.as_bytes());
        symlink(version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            if std::fs::symlink_metadata(dir.join(name)).is_err() {
                symlink(format!("..data/{name}"), dir.join(name)).unwrap();
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(dir.join(previous)).unwrap();
        }
    }

    /// Polls new connections for up to 10 s until the server presents `expected`.
    async fn wait_for_leaf(
        addr: std::net::SocketAddr,
        client: Arc<rustls::ClientConfig>,
        expected: &CertificateDer<'static>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(leaf) = fetch_leaf(addr, client.clone(), "localhost").await
                && &leaf == expected
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn watcher_follows_kubelet_symlink_swap_and_keeps_the_last_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c, d, e) = (
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
        );
        kubelet_publish(dir.path(), "..2026_a", &a.cert_pem, &a.key_pem);
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let resolver = Arc::new(ReloadingCertResolver::new(
            load_certified_key(&cert, &key).unwrap(),
        ));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = tokio::spawn(watch_cert_files(
            resolver.clone(),
            cert.clone(),
            key.clone(),
            Duration::from_millis(100),
            move |event| sink.lock().unwrap().push(event),
        ));
        let server = spawn_echo_server(server_config(resolver.clone(), None).unwrap()).await;
        let client = client_config(
            &[&a.ca_cert_pem, &b.ca_cert_pem, &e.ca_cert_pem],
            None,
            BOTH_VERSIONS,
        );

        // Connection A, opened before the rotation, stays open throughout.
        let mut conn_a = connect(server.addr, client.clone(), "localhost")
            .await
            .unwrap();
        assert_eq!(peer_leaf(&conn_a), Some(leaf_der(&a.cert_pem)));
        echo(&mut conn_a, b"before rotation").await.unwrap();

        kubelet_publish(dir.path(), "..2026_b", &b.cert_pem, &b.key_pem);
        assert!(
            wait_for_leaf(server.addr, client.clone(), &leaf_der(&b.cert_pem)).await,
            "new connections never got the rotated certificate"
        );
        echo(&mut conn_a, b"after rotation").await.unwrap();
        let b_not_after = resolver.current_not_after();
        {
            let events = events.lock().unwrap();
            assert!(
                matches!(events.as_slice(), [ReloadEvent::Reloaded { not_after_unix }] if *not_after_unix == b_not_after),
                "expected exactly one reload, got {events:?}"
            );
        }

        // A certificate with the key of another bundle is refused, reported once, and B stays.
        kubelet_publish(dir.path(), "..2026_c", &c.cert_pem, &d.key_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several more polls of the same broken files must not report again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let events = events.lock().unwrap();
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(
                matches!(
                    &events[1],
                    ReloadEvent::Failed {
                        error: PemError::KeyMismatch { .. }
                    }
                ),
                "{events:?}"
            );
        }
        assert_eq!(
            fetch_leaf(server.addr, client.clone(), "localhost")
                .await
                .unwrap(),
            leaf_der(&b.cert_pem)
        );
        assert_eq!(resolver.current_not_after(), b_not_after);
        echo(&mut conn_a, b"after refusal").await.unwrap();

        // A good pair after the broken one is picked up again.
        kubelet_publish(dir.path(), "..2026_e", &e.cert_pem, &e.key_pem);
        assert!(wait_for_leaf(server.addr, client.clone(), &leaf_der(&e.cert_pem)).await);
        assert!(matches!(
            events.lock().unwrap().as_slice(),
            [_, _, ReloadEvent::Reloaded { .. }]
        ));

        watcher.abort();
    }

    #[tokio::test]
    async fn watcher_reports_missing_files_once_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let a = bundle("localhost");
        let cert = write(dir.path(), "tls.crt", a.cert_pem.as_bytes());
        let key = write(dir.path(), "tls.key", a.key_pem.as_bytes());
        let resolver = resolver_for(&a);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let watcher = tokio::spawn(watch_cert_files(
            resolver.clone(),
            cert.clone(),
            key.clone(),
            Duration::from_millis(50),
            move |event| sink.lock().unwrap().push(event),
        ));
        // Let the watcher see the pair it started with: that is not a reload.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(events.lock().unwrap().is_empty());

        std::fs::remove_file(&key).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            let events = events.lock().unwrap();
            assert!(
                matches!(events.as_slice(), [ReloadEvent::Failed { error: PemError::Missing { path } }] if *path == key),
                "{events:?}"
            );
        }
        assert_eq!(resolver.current_key().cert[0], leaf_der(&a.cert_pem));
        watcher.abort();
    }

    fn pair(cert: &CertBundle, key: &CertBundle) -> Result<(Vec<u8>, Vec<u8>), PemError> {
        Ok((cert.cert_pem.clone().into(), key.key_pem.clone().into()))
    }

    #[test]
    fn a_torn_read_is_skipped_and_a_lasting_refusal_reported_once() {
        let (a, b, c, d) = (
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
            bundle("localhost"),
        );
        let resolver = resolver_for(&a);
        let mut watch = CertWatch::new("tls.crt".into(), "tls.key".into());
        let is_reload = |e: &Option<ReloadEvent>| matches!(e, Some(ReloadEvent::Reloaded { .. }));
        let is_mismatch = |e: &Option<ReloadEvent>| {
            matches!(
                e,
                Some(ReloadEvent::Failed {
                    error: PemError::KeyMismatch { .. }
                })
            )
        };

        assert!(
            watch.observe(pair(&a, &a), &resolver).is_none(),
            "start-up pair"
        );
        // Polled mid-update: the new certificate with the old key.
        assert!(
            watch.observe(pair(&b, &a), &resolver).is_none(),
            "torn read"
        );
        assert!(is_reload(&watch.observe(pair(&b, &b), &resolver)));
        assert_eq!(resolver.current_key().cert[0], leaf_der(&b.cert_pem));
        assert!(
            watch.observe(pair(&b, &b), &resolver).is_none(),
            "unchanged"
        );

        assert!(
            watch.observe(pair(&c, &d), &resolver).is_none(),
            "first sight"
        );
        assert!(is_mismatch(&watch.observe(pair(&c, &d), &resolver)));
        for _ in 0..3 {
            assert!(
                watch.observe(pair(&c, &d), &resolver).is_none(),
                "reported again"
            );
        }
        assert_eq!(resolver.current_key().cert[0], leaf_der(&b.cert_pem));

        // Files that cannot be read count as a refused pair too.
        let missing = || {
            Err(PemError::Missing {
                path: "tls.key".into(),
            })
        };
        assert!(watch.observe(missing(), &resolver).is_none());
        assert!(matches!(
            watch.observe(missing(), &resolver),
            Some(ReloadEvent::Failed {
                error: PemError::Missing { .. }
            })
        ));
        assert!(watch.observe(missing(), &resolver).is_none());
        assert!(
            is_reload(&watch.observe(pair(&a, &a), &resolver)),
            "back to a good pair"
        );
    }
}
