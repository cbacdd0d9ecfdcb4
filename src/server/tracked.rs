//! The three places a connection's phase is seen from, as thin wrappers around what hyper drives:
//! the TLS stream (bytes arrive: a request head begins), the service (a head is complete: a request
//! is in flight) and the answer's body (dropped once written: the connection is idle). The service
//! also adds `Connection: close` to every answer once shutdown has begun.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connections::{Connections, Tracker};

/// A stream that tells the tracker when bytes arrive.
pub struct TrackedIo<T> {
    inner: T,
    tracker: Arc<Tracker>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, tracker: Arc<Tracker>) -> TrackedIo<T> {
        TrackedIo { inner, tracker }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The webhook router, telling the tracker when a request starts and when its answer is done.
#[derive(Clone)]
pub struct TrackedService {
    router: TowerToHyperService<Router>,
    tracker: Arc<Tracker>,
    connections: Arc<Connections>,
}

impl TrackedService {
    pub fn new(
        router: Router,
        tracker: Arc<Tracker>,
        connections: Arc<Connections>,
    ) -> TrackedService {
        TrackedService {
            router: TowerToHyperService::new(router),
            tracker,
            connections,
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        self.tracker.request_started();
        let answer = self.router.call(request);
        let tracker = self.tracker.clone();
        let connections = self.connections.clone();
        Box::pin(async move {
            let mut response = answer.await?;
            // Checked when the answer is ready, so that every answer from the moment shutdown
            // begins tells its client not to reuse the connection (hyper then closes it once the
            // answer is written). The client learns it from the answer itself, before it could
            // send another request: nothing races this close.
            if connections.is_draining() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let done = AnswerDone(tracker);
            Ok(response.map(|body| TrackedBody { body, _done: done }))
        })
    }
}

/// Marks the connection idle when dropped: hyper drops an answer's body once it is written (or
/// when the connection breaks).
struct AnswerDone(Arc<Tracker>);

impl Drop for AnswerDone {
    fn drop(&mut self) {
        self.0.answer_done();
    }
}

/// An answer's body, carrying the marker that its end makes the connection idle.
pub struct TrackedBody {
    body: Body,
    _done: AnswerDone,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
