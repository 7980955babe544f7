//! Listeners: how every socket rolegate serves on (the server's internal, public and TLS
//! listeners, the node agent's) bounds what a client may hold. A client gets a fixed time to send
//! its request headers, a request a fixed time to complete, and a listener a fixed number of
//! open connections; a connection beyond the cap is closed at once rather than queued.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum_server::Handle;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::timeout::TimeoutLayer;

/// How long open connections get to finish after SIGINT or SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What one listener allows a client.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a request's headers, and its first request after connecting
    /// (or after the TLS handshake, which gets the same time); slower clients are disconnected.
    /// An idle keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Time a request may take, reading its body included, before it is answered 408.
    pub request_timeout: Duration,
    /// Connections held open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Counts the connections closed for being over `max_connections`.
    pub refused: Counter,
}

impl Limits {
    /// The defaults of `rolegate server` and `rolegate serve`: 10 s to send headers, 30 s per
    /// request, 4096 connections per listener.
    pub fn server() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(30), 4096)
    }

    /// The defaults of `rolegate agent`: as the server's, with 1024 connections (the pods of one
    /// node).
    pub fn agent() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(30), 1024)
    }

    /// Limits with a fresh, unregistered refusal counter.
    pub fn new(
        header_read_timeout: Duration,
        request_timeout: Duration,
        max_connections: usize,
    ) -> Self {
        Self {
            header_read_timeout,
            request_timeout,
            max_connections,
            refused: Counter::default(),
        }
    }

    /// The same limits, counting refusals in `refused`.
    #[must_use]
    pub fn counting(mut self, refused: Counter) -> Self {
        self.refused = refused;
        self
    }

    /// The same limits for the server's listener `listener`, counting its refusals in
    /// `rolegate_connections_refused_total{listener}`.
    #[must_use]
    pub fn for_listener(&self, metrics: &crate::metrics::Metrics, listener: &str) -> Self {
        let refused = metrics
            .connections_refused
            .get_or_create(&vec![("listener", listener.to_owned())])
            .clone();
        self.clone().counting(refused)
    }
}

/// An acceptor that admits at most `permits` connections at once: each admitted connection holds
/// a permit until it is dropped; one over the cap is refused (closed) before anything is read
/// from it, so it costs neither a TLS handshake nor a parse.
#[derive(Debug, Clone)]
pub struct ConnectionCap<A = DefaultAcceptor> {
    inner: A,
    permits: Arc<Semaphore>,
    refused: Counter,
    cap: usize,
}

impl ConnectionCap {
    /// A cap of `limits.max_connections`.
    pub fn new(limits: &Limits) -> Self {
        let cap = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: DefaultAcceptor::new(),
            permits: Arc::new(Semaphore::new(cap)),
            refused: limits.refused.clone(),
            cap,
        }
    }
}

impl<A, I, S> Accept<I, S> for ConnectionCap<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Capped<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let refused = self.refused.inc() + 1;
            // Logged on the 1st, 2nd, 4th, 8th… refusal: a flood is visible without flooding.
            if refused.is_power_of_two() {
                tracing::warn!(
                    cap = self.cap,
                    refused,
                    "connection cap reached; closing new connections until others end"
                );
            }
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection cap reached",
            ))));
        };
        let inner = self.inner.accept(stream, service);
        Box::pin(async move {
            let (io, service) = inner.await?;
            Ok((
                Capped {
                    io,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection admitted by [`ConnectionCap`]: its permit is returned when it is dropped.
#[derive(Debug)]
pub struct Capped<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `app` on `listener` within `limits`, over TLS when `tls` is given (a config
/// [`super::reload_tls`] may swap while serving), until `handle` shuts it down.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<RustlsConfig>,
    limits: &Limits,
    handle: Handle<SocketAddr>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let app = app
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let cap = ConnectionCap::new(limits);
    let mut server = axum_server::from_tcp(listener)?
        .handle(handle)
        // Also bounds the protocol detection before the first request, which hyper leaves
        // untimed.
        .first_request_timeout(limits.header_read_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_read_timeout);
    match tls {
        None => server.acceptor(cap).serve(app).await,
        Some(config) => {
            let acceptor = RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_read_timeout)
                .acceptor(cap);
            server.acceptor(acceptor).serve(app).await
        }
    }
}

/// A handle that starts a graceful shutdown of every server it is given to on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> Handle<SocketAddr> {
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        crate::standalone::shutdown_signal().await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    handle
}
