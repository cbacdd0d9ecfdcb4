//! A gate for CPU-heavy futures: [`Gated`] polls its future only while holding a permit of a shared
//! semaphore, and gives the permit back after each poll. So at most as many of them run at once as
//! there are permits, yet none holds a permit while it waits for the network.
//!
//! Used for TLS handshakes: a handshake's key exchange and signature take one poll of a few hundred
//! microseconds. A burst of new connections (clients reconnecting at once, or an attacker whose
//! connections were closed to make room) would otherwise fill every runtime thread's queue with
//! them, and the requests of established connections would wait behind the whole burst. With fewer
//! permits than threads, one thread is always left for those requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// How many gated futures may be polled at once: all threads but one (at least one).
pub fn permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// `inner`, polled only while holding a permit of `gate`.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Semaphore>,
    acquiring: Option<Acquiring>,
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F, gate: Arc<Semaphore>) -> Gated<F> {
        Gated {
            inner: Box::pin(inner),
            gate,
            acquiring: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let acquiring = this
            .acquiring
            .get_or_insert_with(|| Box::pin(this.gate.clone().acquire_owned()));
        let permit = match acquiring.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(permit) => permit,
        };
        this.acquiring = None;
        // The semaphore is never closed; if it were, the future runs ungated rather than never.
        let polled = this.inner.as_mut().poll(cx);
        drop(permit);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts how many of its kind are inside a poll at once, and the most ever seen.
    struct Busy {
        inside: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        polls_left: usize,
    }

    impl Future for Busy {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // CPU work inside the poll, long enough for other threads to overlap it.
            std::thread::sleep(Duration::from_millis(2));
            self.inside.fetch_sub(1, Ordering::SeqCst);
            if self.polls_left == 0 {
                return Poll::Ready(());
            }
            self.polls_left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gated_futures_are_polled_one_permit_at_a_time_and_all_finish() {
        let gate = Arc::new(Semaphore::new(1));
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(Gated::new(
                    Busy {
                        inside: inside.clone(),
                        most: most.clone(),
                        polls_left: 3,
                    },
                    gate.clone(),
                ))
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("every gated future finishes")
                .unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        // Without the gate the same futures do overlap on four threads: the test can fail.
        let ungated: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(Busy {
                    inside: inside.clone(),
                    most: most.clone(),
                    polls_left: 3,
                })
            })
            .collect();
        for t in ungated {
            t.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) > 1);
        // No permit is kept between polls.
        assert_eq!(gate.available_permits(), 1);
    }
}
