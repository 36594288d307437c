//! The gRPC server that serves xDS and the translation ext_proc, who may call it, and how it
//! stops without losing a request.
//!
//! Takes: the ADS and ext_proc services, where to listen ([`GrpcListen`]), a stop signal.
//! Gives: the listeners, serving until stopped; a [`Health`] handle that turns the
//! `grpc.health.v1.Health` status the Envoys check to NOT_SERVING when shutdown begins.
//!
//! Every caller is authenticated, because the ext_proc puts API keys into the requests it
//! processes and ADS hands out the whole configuration:
//! - The Envoy started here connects over a **private socket**: a Unix socket in Linux's
//!   abstract namespace with a random name, which accepts a connection only from a process of
//!   aixds's own user (the peer's credentials, `SO_PEERCRED`, checked on accept). Another local
//!   user cannot open it, and nothing is left on disk when aixds is killed.
//! - A **TCP listener** (for Envoys started elsewhere) requires mutual TLS: a client certificate
//!   that chains to the configured client CA. Clear text, or TLS without client certificates,
//!   is refused at start unless the operator opts out explicitly ([`TcpAuth::Insecure`], the
//!   `--insecure-grpc` flag), and that is logged as a warning.

use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, Router};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::tls::ServerTls;

/// Who may call the TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpAuth {
    /// Mutual TLS: `ServerTls::client_ca` must be set.
    MutualTls(ServerTls),
    /// Anyone who can connect, in clear text or over server-only TLS. Every API key the
    /// ext_proc injects can then be read by any caller: only for a network nobody else
    /// reaches, and only when asked for by name.
    Insecure(Option<ServerTls>),
}

/// Where the gRPC services listen besides the private socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcListen {
    pub addr: SocketAddr,
    pub auth: TcpAuth,
}

/// Why the gRPC server will not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcAuthError {
    #[error(
        "refusing to serve xDS and the ext_proc on {0} without client authentication: any \
         caller could read the API keys the ext_proc injects. Give --tls-cert, --tls-key and \
         --tls-client-ca (mutual TLS), or pass --insecure-grpc to accept unauthenticated callers"
    )]
    NoClientAuth(SocketAddr),
}

impl GrpcListen {
    /// A listener whose callers must present a certificate from `tls.client_ca`; without
    /// one, an error unless `insecure` says otherwise.
    pub fn new(
        addr: SocketAddr,
        tls: Option<ServerTls>,
        insecure: bool,
    ) -> Result<GrpcListen, GrpcAuthError> {
        let auth = match (tls, insecure) {
            (tls, true) => TcpAuth::Insecure(tls),
            (Some(tls), false) if tls.client_ca.is_some() => TcpAuth::MutualTls(tls),
            _ => return Err(GrpcAuthError::NoClientAuth(addr)),
        };
        Ok(GrpcListen { addr, auth })
    }

    fn tls(&self) -> Option<&ServerTls> {
        match &self.auth {
            TcpAuth::MutualTls(tls) => Some(tls),
            TcpAuth::Insecure(tls) => tls.as_ref(),
        }
    }
}

/// The status Envoys' health checks read: SERVING until shutdown begins.
#[derive(Clone)]
pub struct Health(HealthReporter);

impl Health {
    /// New connections and streams should go to other replicas from now on.
    pub async fn set_not_serving(&self) {
        self.0.set_service_status("", ServingStatus::NotServing).await;
    }
}

/// The private socket's address as Envoy names it (`@` marks the abstract namespace).
pub struct PrivateSocket {
    pub name: String,
    listener: UnixListener,
}

impl PrivateSocket {
    /// Binds a fresh abstract socket `aixds-{pid}-{random}`.
    pub fn bind() -> anyhow::Result<PrivateSocket> {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let name = format!("aixds-{}-{random:016x}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)
            .with_context(|| format!("binding the private socket @{name}"))?;
        listener.set_nonblocking(true)?;
        Ok(PrivateSocket { name: format!("@{name}"), listener: UnixListener::from_std(listener)? })
    }

    /// Accepted connections from processes of this user; others are closed at once.
    fn incoming(self) -> anyhow::Result<impl Stream<Item = std::io::Result<Conn>>> {
        let uid = own_uid()?;
        Ok(UnixListenerStream::new(self.listener).filter_map(move |conn| match conn {
            Ok(stream) => match stream.peer_cred() {
                Ok(peer) if peer.uid() == uid => Some(Ok(Conn::Unix(stream))),
                Ok(peer) => {
                    tracing::warn!(
                        peer_uid = peer.uid(),
                        peer_pid = peer.pid(),
                        "refused a connection to the private gRPC socket from another user"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!("refused a private-socket connection without credentials: {e}");
                    None
                }
            },
            Err(e) => Some(Err(e)),
        }))
    }
}

/// The user this process runs as (the owner of `/proc/self`), without `unsafe` FFI.
fn own_uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// The gRPC services, served on the private socket (when given) and on TCP (when given) until
/// `stopped`. Returns the TCP address actually bound, and the health handle.
pub(super) async fn serve(
    router: impl Fn(tonic::transport::Server) -> Router + Send + 'static,
    private: Option<PrivateSocket>,
    tcp: Option<&GrpcListen>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(Option<SocketAddr>, Health, ServeTasks)> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let mut tasks = Vec::new();
    let add_health =
        |server: tonic::transport::Server| router(server).add_service(health_service.clone());
    if let Some(socket) = private {
        let incoming = socket.incoming()?;
        let router = add_health(tonic::transport::Server::builder());
        tasks.push(spawn_server("private socket", router, incoming, stopped.clone()));
    }
    let mut tcp_addr = None;
    if let Some(listen) = tcp {
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = listen.tls() {
            server = tls.apply(server)?;
        }
        if let TcpAuth::Insecure(_) = listen.auth {
            tracing::warn!(
                addr = %listen.addr,
                "--insecure-grpc: xDS and the ext_proc accept callers without a client \
                 certificate; anyone who reaches this port can read the API keys it injects"
            );
        }
        let listener = TcpListener::bind(listen.addr)
            .await
            .with_context(|| format!("binding the xDS address {}", listen.addr))?;
        tcp_addr = Some(listener.local_addr()?);
        // Nagle would hold each small ext_proc reply for Envoy's delayed ACK (~40 ms twice per
        // request); `Server::tcp_nodelay` does not reach sockets passed in like this.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.map(|stream| {
                let _ = stream.set_nodelay(true);
                Conn::Tcp(stream)
            })
        });
        tasks.push(spawn_server("TCP", add_health(server), incoming, stopped.clone()));
    }
    Ok((tcp_addr, Health(reporter), ServeTasks(tasks)))
}

/// The serving tasks; each ends once its server has stopped and its connections are closed.
pub(super) struct ServeTasks(Vec<tokio::task::JoinHandle<()>>);

impl ServeTasks {
    pub fn none() -> ServeTasks {
        ServeTasks(Vec::new())
    }

    /// Waits for every server to finish.
    pub async fn join(self) {
        for task in self.0 {
            let _ = task.await;
        }
    }
}

fn spawn_server(
    what: &'static str,
    router: Router,
    incoming: impl Stream<Item = std::io::Result<Conn>> + Send + 'static,
    mut stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!("gRPC server ({what}) failed: {e}");
        }
    })
}

/// A connection on either listener.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(client_ca: bool) -> ServerTls {
        ServerTls {
            cert: "c.crt".into(),
            key: "c.key".into(),
            client_ca: client_ca.then(|| "ca.crt".into()),
        }
    }

    #[test]
    fn tcp_needs_client_certificates_or_an_explicit_opt_out() {
        let addr: SocketAddr = "127.0.0.1:18000".parse().unwrap();
        assert!(matches!(
            GrpcListen::new(addr, Some(tls(true)), false).unwrap().auth,
            TcpAuth::MutualTls(_)
        ));
        for refused in [None, Some(tls(false))] {
            let err = GrpcListen::new(addr, refused.clone(), false).unwrap_err().to_string();
            assert!(err.contains("--insecure-grpc") && err.contains("--tls-client-ca"), "{err}");
            assert_eq!(
                GrpcListen::new(addr, refused.clone(), true).unwrap().auth,
                TcpAuth::Insecure(refused)
            );
        }
    }
}
