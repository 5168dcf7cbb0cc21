//! The node's HTTP port (host-meta, `/healthz`, `/metrics`, XMPP over WebSocket and BOSH)
//! serves HTTPS and plain HTTP on one socket: each accepted connection's first byte tells
//! them apart (0x16 opens a TLS ClientHello). HTTPS uses the vhosts' certificates, chosen
//! by SNI as for c2s; plain HTTP is for loopback and a reverse proxy in front of the node.
//!
//! ```text
//!   accept ──► peek 1 byte ──0x16──► TLS handshake (SNI) ──┐
//!                   └───────other──────────────────────────┴──► axum (HttpListener)
//! ```

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::limits::ConnLimits;
use crate::node::Node;

/// What the web transports share: the node, its connection limits, and the shutdown signal.
pub struct WebState {
    pub node: Arc<Node>,
    pub limits: Arc<ConnLimits>,
    pub stop: watch::Receiver<bool>,
    /// The BOSH sessions (XEP-0124), by `sid`.
    pub bosh: super::bosh::Sessions,
}

/// Who is on the other end of an HTTP connection, and whether it came over TLS.
#[derive(Clone, Copy, Debug)]
pub struct HttpPeer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl HttpPeer {
    /// Whether an XMPP stream on this connection counts as encrypted: over HTTPS, or plain
    /// HTTP from loopback, where a reverse proxy terminates TLS (or a local test connects).
    pub fn is_secure(&self) -> bool {
        self.tls || self.addr.ip().is_loopback()
    }
}

impl Connected<IncomingStream<'_, HttpListener>> for HttpPeer {
    fn connect_info(stream: IncomingStream<'_, HttpListener>) -> Self {
        *stream.remote_addr()
    }
}

/// An accepted HTTP connection, plain or TLS.
pub enum HttpIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for HttpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connections ready for HTTP, plain or after their TLS handshake.
pub struct HttpListener {
    ready: mpsc::Receiver<(HttpIo, HttpPeer)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpIo;
    type Addr = HttpPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(HttpPeer {
            addr: self.local,
            tls: false,
        })
    }
}

/// Accepts on `listener` until `stop`, handshaking TLS where the client starts it. Slow
/// handshakes run in their own tasks, so they never hold the others up.
pub fn accept(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<HttpListener> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let io = match tokio::time::timeout(HANDSHAKE, start(tcp, &acceptor)).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "HTTP connection failed to start");
                        return;
                    }
                    Err(_) => return,
                };
                let tls = matches!(io, HttpIo::Tls(_));
                let _ = tx.send((io, HttpPeer { addr, tls })).await;
            });
        }
    });
    Ok(HttpListener { ready, local })
}

/// How long a client has to send its first byte and finish a TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

async fn start(tcp: TcpStream, acceptor: &TlsAcceptor) -> io::Result<HttpIo> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // A TLS record of type handshake (RFC 8446 §5.1): the ClientHello.
    if first[0] == 0x16 {
        let tls = acceptor.accept(tcp).await?;
        return Ok(HttpIo::Tls(Box::new(tls)));
    }
    Ok(HttpIo::Plain(tcp))
}
