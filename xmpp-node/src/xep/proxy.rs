//! SOCKS5 bytestreams proxy (XEP-0065) as a service of each vhost at `proxy.<vhost>` (one
//! of `services`), listed in the vhost's disco#items: two clients that cannot reach each other directly
//! both connect to the node's proxy port, and the proxy relays between them.
//!
//! XMPP side: the service names its stream host (`<streamhost jid host port/>`: the node's
//! `public_host` and the proxy port), and an account of the vhost activates a bytestream
//! (`<activate>target</activate>` with the stream's `sid`) once both ends are connected.
//!
//! SOCKS5 side ([`serve`]): each end greets with "no authentication" and CONNECTs to the
//! domain name SHA-1(sid + initiator JID + target JID) in hex, port 0 (XEP-0065 §5.3.2);
//! the proxy answers success and holds the connection, two at most per name, for
//! [`PENDING_SECS`]. Activation checks the name from the activating account's own full
//! JID, so only the initiator can start its streams, and only the vhost's accounts can use
//! the proxy at all. An activated pair is relayed until either end closes. Limits: pending
//! connections in total and per client address, and relays in total
//! ([`MAX_PENDING`], [`MAX_PENDING_PER_IP`], [`MAX_RELAYS`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sha1::{Digest, Sha1};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::SessionHandle,
};

pub const NS: &str = "http://jabber.org/protocol/bytestreams";

/// The subdomain of a vhost the service answers at.
pub const PREFIX: &str = "proxy.";

/// Seconds a connected end waits for its partner and the activation.
pub const PENDING_SECS: u64 = 60;
/// Connections waiting for activation, in total and per client address.
pub const MAX_PENDING: usize = 1_000;
pub const MAX_PENDING_PER_IP: usize = 20;
/// Pairs relayed at once.
pub const MAX_RELAYS: usize = 1_000;

/// Seconds a SOCKS5 handshake may take.
const HANDSHAKE_SECS: u64 = 10;

/// Whether the node runs a proxy for the vhost's accounts.
pub fn enabled(node: &Node, vhost: &str) -> bool {
    node.proxy.port().is_some() && node.is_hosted(vhost)
}

/// The SOCKS5 destination name of a bytestream (XEP-0065 §5.3.2).
pub fn stream_name(sid: &str, initiator: &str, target: &str) -> String {
    hex::encode(Sha1::digest(format!("{sid}{initiator}{target}").as_bytes()))
}

/// One end waiting in the proxy.
struct Waiting {
    stream: TcpStream,
    ip: IpAddr,
    since: Instant,
}

/// The proxy's state in the running node.
#[derive(Default)]
pub struct Proxy {
    /// The proxy port (None: the node runs no proxy).
    port: Mutex<Option<u16>>,
    waiting: Mutex<HashMap<String, Vec<Waiting>>>,
    relays: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn port(&self) -> Option<u16> {
        *self.port.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_port(&self, port: u16) {
        *self.port.lock().unwrap_or_else(|p| p.into_inner()) = Some(port);
    }

    /// Adds a connected end under `name`; false when the limits refuse it.
    fn hold(&self, name: String, stream: TcpStream, ip: IpAddr) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        waiting.retain(|_, ends| {
            ends.retain(|e| now.duration_since(e.since) < Duration::from_secs(PENDING_SECS));
            !ends.is_empty()
        });
        let total: usize = waiting.values().map(Vec::len).sum();
        let from_ip = waiting.values().flatten().filter(|e| e.ip == ip).count();
        let ends = waiting.entry(name).or_default();
        if total >= MAX_PENDING || from_ip >= MAX_PENDING_PER_IP || ends.len() >= 2 {
            return false;
        }
        ends.push(Waiting {
            stream,
            ip,
            since: now,
        });
        true
    }

    /// The two ends of `name` once both are connected, taken out of waiting.
    fn take_pair(&self, name: &str) -> Option<(TcpStream, TcpStream)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |e: &Waiting| e.since.elapsed() < Duration::from_secs(PENDING_SECS);
        if waiting
            .get(name)
            .is_some_and(|ends| ends.len() == 2 && ends.iter().all(fresh))
        {
            let mut ends = waiting.remove(name)?;
            let b = ends.pop()?;
            let a = ends.pop()?;
            Some((a.stream, b.stream))
        } else {
            None
        }
    }

    /// Ends waiting now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

// ---- XMPP ----------------------------------------------------------------------------------

/// Handles a stanza to `proxy.<vhost>`.
pub async fn handle(node: &Node, me: &SessionHandle, vhost: &str, stanza: Element) {
    let Some((kind, payload)) = super::services::query(me, &stanza) else {
        return;
    };
    let service = format!("{PREFIX}{vhost}");
    let reply =
        if kind == "get" && payload.is("query", ns::DISCO_INFO) && payload.attr("node").is_none() {
            iq_result(&stanza).with_child(
                Element::new("query", ns::DISCO_INFO)
                    .with_child(
                        Element::new("identity", ns::DISCO_INFO)
                            .with_attr("category", "proxy")
                            .with_attr("type", "bytestreams")
                            .with_attr("name", "SOCKS5 Bytestreams"),
                    )
                    .with_child(
                        Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO),
                    )
                    .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", NS)),
            )
        } else if kind == "get" && payload.is("query", ns::DISCO_ITEMS) {
            iq_result(&stanza).with_child(Element::new("query", ns::DISCO_ITEMS))
        } else if me.jid.domain() != vhost {
            error_reply(
                &stanza,
                Condition::Forbidden,
                Some(&format!("Only accounts of {vhost} may use this proxy.")),
            )
        } else if kind == "get" && payload.is("query", NS) {
            match node.proxy.port() {
                Some(port) => iq_result(&stanza).with_child(
                    Element::new("query", NS).with_child(
                        Element::new("streamhost", NS)
                            .with_attr("jid", service)
                            .with_attr("host", node.settings.node.public_host.clone())
                            .with_attr("port", port.to_string()),
                    ),
                ),
                None => error_reply(&stanza, Condition::ServiceUnavailable, None),
            }
        } else if kind == "set" && payload.is("query", NS) {
            activate(node, &me.jid, &stanza, payload).await
        } else {
            error_reply(&stanza, Condition::ServiceUnavailable, None)
        };
    me.deliver(reply);
}

/// `<query sid><activate>target</activate></query>` from the initiator.
async fn activate(node: &Node, initiator: &Jid, iq: &Element, query: &Element) -> Element {
    let sid = query.attr("sid").unwrap_or_default();
    let target = query
        .child_text("activate", NS)
        .and_then(|t| Jid::parse(t.trim()).ok());
    let (Some(target), false) = (target, sid.is_empty()) else {
        return error_reply(
            iq,
            Condition::BadRequest,
            Some("Activation needs the stream's sid and the target's JID."),
        );
    };
    let name = stream_name(sid, &initiator.to_string(), &target.to_string());
    // The initiator activates once the proxy's SOCKS5 answer reached it, which is written
    // a moment before the connection joins the waiting ones: allow for that moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pair = node.proxy.take_pair(&name);
    while pair.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        pair = node.proxy.take_pair(&name);
    }
    let Some((a, b)) = pair else {
        return error_reply(
            iq,
            Condition::ItemNotFound,
            Some("Both ends of this bytestream must be connected to the proxy first."),
        );
    };
    let relays = node.proxy.relays.clone();
    if relays.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS {
        relays.fetch_sub(1, Ordering::AcqRel);
        return error_reply(
            iq,
            Condition::ResourceConstraint,
            Some("The proxy relays as many streams as it can; try again later."),
        );
    }
    tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        let moved = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        relays.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(?moved, "a bytestream ended");
    });
    iq_result(iq)
}

// ---- SOCKS5 --------------------------------------------------------------------------------

/// What a SOCKS5 exchange asked, or why it is refused (the reply code, RFC 1928 §6).
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// CONNECT to this domain name (a bytestream's name), port 0.
    Connect(String),
    Refused(u8),
}

/// Reads a SOCKS5 CONNECT request (after the greeting): `05 01 00 03 len name port`.
pub fn parse_request(head: [u8; 5], rest: &[u8]) -> Request {
    let [ver, cmd, _, atyp, len] = head;
    if ver != 5 {
        return Request::Refused(1);
    }
    if cmd != 1 {
        return Request::Refused(7); // command not supported
    }
    if atyp != 3 {
        return Request::Refused(8); // address type not supported
    }
    let name = &rest[..usize::from(len).min(rest.len())];
    match std::str::from_utf8(name) {
        Ok(n) if n.len() == 40 && n.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Request::Connect(n.to_ascii_lowercase())
        }
        _ => Request::Refused(4), // host unreachable: no such stream name
    }
}

/// The SOCKS5 reply naming `name` (success) or refusing with `code`.
pub fn reply(code: u8, name: &str) -> Vec<u8> {
    let mut out = vec![5, code, 0, 3, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Accepts SOCKS5 connections until `stop`.
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a proxy connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let node = node.clone();
        tokio::spawn(async move {
            let shaken =
                tokio::time::timeout(Duration::from_secs(HANDSHAKE_SECS), handshake(stream)).await;
            match shaken {
                Ok(Ok(Some((stream, name)))) => {
                    if !node.proxy.hold(name, stream, peer.ip()) {
                        tracing::debug!(%peer, "a proxy connection was refused by the limits");
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "a SOCKS5 handshake failed"),
                Err(_) => tracing::debug!(%peer, "a SOCKS5 handshake timed out"),
            }
        });
    }
}

/// Greeting and CONNECT; the stream and its name when both were right.
async fn handshake(mut s: TcpStream) -> std::io::Result<Option<(TcpStream, String)>> {
    let mut greeting = [0u8; 2];
    s.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    s.read_exact(&mut methods).await?;
    if greeting[0] != 5 || !methods.contains(&0) {
        s.write_all(&[5, 0xff]).await?;
        return Ok(None);
    }
    s.write_all(&[5, 0]).await?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await?;
    let mut rest = vec![0u8; usize::from(head[4]) + 2];
    if head[3] == 3 {
        s.read_exact(&mut rest).await?;
    }
    match parse_request(head, &rest) {
        Request::Connect(name) => {
            s.write_all(&reply(0, &name)).await?;
            Ok(Some((s, name)))
        }
        Request::Refused(code) => {
            s.write_all(&reply(code, "")).await?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_the_sha1_of_sid_initiator_and_target() {
        assert_eq!(
            stream_name(
                "vxf9n471bn46",
                "requester@example.com/foo",
                "target@example.org/bar"
            ),
            "98b8d688d0f5d895fd41c5e7309a2e9e33ba32ff"
        );
        let n = stream_name("s", "a@x/1", "b@x/2");
        assert_eq!(n.len(), 40);
        assert_ne!(n, stream_name("s", "b@x/2", "a@x/1"), "the order matters");
    }

    /// A connected loopback stream (its other end dropped).
    async fn stream(listener: &TcpListener) -> TcpStream {
        let (s, _) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        s.unwrap()
    }

    #[tokio::test]
    async fn two_ends_make_a_pair_and_the_limits_refuse_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(proxy.hold("n1".into(), stream(&listener).await, ip));
        assert!(proxy.take_pair("n1").is_none(), "one end only");
        assert!(proxy.hold("n1".into(), stream(&listener).await, ip));
        assert!(
            !proxy.hold("n1".into(), stream(&listener).await, ip),
            "a third end"
        );
        assert_eq!(proxy.waiting(), 2);
        assert!(proxy.take_pair("n1").is_some());
        assert_eq!(proxy.waiting(), 0);
        for i in 0..MAX_PENDING_PER_IP {
            assert!(proxy.hold(format!("m{i}"), stream(&listener).await, ip));
        }
        assert!(
            !proxy.hold("x".into(), stream(&listener).await, ip),
            "past the per-address limit"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(proxy.hold("x".into(), stream(&listener).await, other));
    }

    #[test]
    fn only_connects_to_a_stream_name_are_accepted() {
        let name = stream_name("s", "a@x/1", "b@x/2");
        let mut rest = name.as_bytes().to_vec();
        rest.extend([0, 0]);
        assert_eq!(
            parse_request([5, 1, 0, 3, 40], &rest),
            Request::Connect(name.clone())
        );
        assert_eq!(
            parse_request([5, 2, 0, 3, 40], &rest),
            Request::Refused(7),
            "BIND"
        );
        assert_eq!(
            parse_request([5, 1, 0, 1, 40], &rest),
            Request::Refused(8),
            "IPv4"
        );
        assert_eq!(parse_request([4, 1, 0, 3, 40], &rest), Request::Refused(1));
        assert_eq!(
            parse_request([5, 1, 0, 3, 5], b"hello\0\0"),
            Request::Refused(4)
        );
        assert_eq!(reply(0, "ab"), vec![5, 0, 0, 3, 2, b'a', b'b', 0, 0]);
    }
}
