//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the node's HTTP port.
//!
//! The upgrade asks for the `xmpp` subprotocol and takes a place in the same connection
//! limits as a TCP client; the socket then runs as a [`super::c2s`] connection whose
//! transport is [`WsIo`]: a byte stream over WebSocket messages, translated by
//! [`crate::proto::framing`]. Authentication, binding, limits and stanza handling are the
//! c2s connection's own.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures_util::{Sink, Stream};
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::http::{HttpPeer, WebState};
use crate::proto::framing::{Framer, unframe};

/// `GET /xmpp-websocket`: upgrades to an XMPP stream.
pub async fn upgrade(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = ws.protocols(["xmpp"]);
    // RFC 7395 §3.1: the subprotocol is what makes this an XMPP stream.
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "XMPP over WebSocket needs the 'xmpp' subprotocol (RFC 7395).\n",
        )
            .into_response();
    }
    // Streams must be encrypted: plain HTTP is for loopback (a TLS-terminating proxy).
    if !peer.is_secure() && state.node.settings.node.require_tls {
        return (
            StatusCode::FORBIDDEN,
            "XMPP over WebSocket needs wss:// (HTTPS) here.\n",
        )
            .into_response();
    }
    let Some(slot) = state.limits.admit(&state.node, peer.addr.ip()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many connections.\n").into_response();
    };
    let limits = &state.node.settings.node.limits;
    // A stanza is one message: the stanza limit bounds messages too (plus room for framing).
    let max = limits.max_stanza_bytes + 1024;
    let secure = peer.is_secure();
    let node = state.node.clone();
    let stop = state.stop.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            super::c2s::run_websocket(node, WsIo::new(socket), peer.addr, secure, stop, slot)
        })
}

/// A WebSocket seen as the byte stream of an XMPP connection: reads yield the stream the
/// messages stand for, writes are cut into messages when flushed.
pub struct WsIo {
    socket: WebSocket,
    input: Vec<u8>,
    read_at: usize,
    framer: Framer,
    outgoing: VecDeque<String>,
    eof: bool,
}

impl WsIo {
    pub fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            input: Vec::new(),
            read_at: 0,
            framer: Framer::default(),
            outgoing: VecDeque::new(),
            eof: false,
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.input.len() {
                let n = buf.remaining().min(this.input.len() - this.read_at);
                buf.put_slice(&this.input[this.read_at..this.read_at + n]);
                this.read_at += n;
                if this.read_at == this.input.len() {
                    this.input.clear();
                    this.read_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Text(text))) => {
                    tracing::trace!(xml = %crate::proto::redact::redact(text.as_str()), "websocket message");
                    this.input.clear();
                    this.input
                        .extend_from_slice(unframe(text.as_str()).as_bytes());
                    this.read_at = 0;
                }
                // RFC 7395 §3.2: XMPP travels in text messages only.
                Some(Ok(Message::Binary(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a binary WebSocket message",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Closed without <close/>: the stream broke, as a dropped TCP connection.
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().framer.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outgoing.extend(this.framer.messages());
        while !this.outgoing.is_empty() {
            let mut socket = Pin::new(&mut this.socket);
            ready!(socket.as_mut().poll_ready(cx)).map_err(io::Error::other)?;
            let message = this.outgoing.pop_front().unwrap_or_default();
            socket
                .start_send(Message::Text(message.into()))
                .map_err(io::Error::other)?;
        }
        ready!(Pin::new(&mut this.socket).poll_flush(cx)).map_err(io::Error::other)?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        let this = self.get_mut();
        // A close the client already sent, or a socket already gone, is no error here.
        let _ = ready!(Pin::new(&mut this.socket).poll_close(cx));
        Poll::Ready(Ok(()))
    }
}
