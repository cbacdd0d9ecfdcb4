//! A TCP load balancer on loopback that plays a Kubernetes Service in front of stage-guard replicas:
//! each new connection goes to the next backend in turn (round robin per connection, as kube-proxy
//! spreads connections), skipping backends whose `/readyz` did not answer 200 at the last look (as
//! endpoints drop a pod that is terminating or unready). Bytes are copied both ways untouched, TLS
//! included; a connection stays with its backend until one side closes it, as through a ClusterIP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each backend's `/readyz` is asked.
pub const READINESS_PERIOD: Duration = Duration::from_millis(100);
const STEP_TIMEOUT: Duration = Duration::from_secs(1);

/// One replica: where it serves webhooks, where it answers `/readyz`, and what was seen of it.
#[derive(Debug)]
struct Backend {
    webhook: SocketAddr,
    admin: SocketAddr,
    ready: bool,
    /// Connections sent to this replica (since it was last replaced).
    connections: usize,
}

#[derive(Debug)]
struct Shared {
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn backends(&self) -> std::sync::MutexGuard<'_, Vec<Backend>> {
        self.backends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next ready backend after the last one chosen, counting the connection.
    fn choose(&self) -> Option<SocketAddr> {
        let mut backends = self.backends();
        let n = backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| backends[i].ready)
            .map(|i| {
                backends[i].connections += 1;
                backends[i].webhook
            })
    }
}

pub struct Balancer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Balancer {
    /// Starts balancing over `(webhook, admin)` address pairs, on a free loopback port.
    pub fn start(backends: &[(SocketAddr, SocketAddr)]) -> std::io::Result<Balancer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            backends: Mutex::new(
                backends
                    .iter()
                    .map(|&(webhook, admin)| Backend {
                        webhook,
                        admin,
                        ready: false,
                        connections: 0,
                    })
                    .collect(),
            ),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("balancer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::spawn(watch_readiness(for_thread.clone()));
                    serve(listener, for_thread).await;
                });
            })?;
        Ok(Balancer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Puts a new replica in backend `index`'s place (a restarted pod); it gets connections once its
    /// `/readyz` answers 200.
    pub fn replace(&self, index: usize, webhook: SocketAddr, admin: SocketAddr) {
        if let Some(b) = self.shared.backends().get_mut(index) {
            *b = Backend {
                webhook,
                admin,
                ready: false,
                connections: 0,
            };
        }
    }

    /// Whether backend `index` was ready at the last look.
    pub fn ready(&self, index: usize) -> bool {
        self.shared.backends().get(index).is_some_and(|b| b.ready)
    }

    /// Connections sent to backend `index` since it was started or replaced.
    pub fn connections(&self, index: usize) -> usize {
        self.shared
            .backends()
            .get(index)
            .map_or(0, |b| b.connections)
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = tokio::time::timeout(STEP_TIMEOUT, listener.accept()).await;
        let Ok(Ok((mut client, _))) = accepted else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // No ready backend, or it refuses: the client's connection is closed, as a Service
            // without endpoints refuses it.
            let Some(backend) = shared.choose() else {
                return;
            };
            let Ok(Ok(mut server)) =
                tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(backend)).await
            else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            // Each side's end (FIN) is passed on to the other; the copy ends when both have ended.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// Asks every backend's `/readyz` each [`READINESS_PERIOD`].
async fn watch_readiness(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let admins: Vec<SocketAddr> = shared.backends().iter().map(|b| b.admin).collect();
        for (i, admin) in admins.into_iter().enumerate() {
            let ready = readyz(admin).await;
            if let Some(b) = shared.backends().get_mut(i)
                && b.admin == admin
            {
                b.ready = ready;
            }
        }
        tokio::time::sleep(READINESS_PERIOD).await;
    }
}

/// `GET /readyz` answered 200 within a second.
async fn readyz(admin: SocketAddr) -> bool {
    let ask = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(STEP_TIMEOUT, ask).await,
        Ok(Some(true))
    )
}
