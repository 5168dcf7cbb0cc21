//! XEP-0115 Entity Capabilities: what each online client supports, learnt from the
//! `<c xmlns='http://jabber.org/protocol/caps' hash node ver/>` in its available presence,
//! so that PEP (`xep::pep`) sends each resource only the notifications it asked for with
//! `<feature var='NODE+notify'/>` (XEP-0163 §4.3 filtered notifications).
//!
//! Data flow: a session's last available presence is kept by the router, so the `ver` of a
//! session is read from there and nothing per session is stored here. The node keeps one
//! bounded cache `ver → features` of verified answers only. For a `ver` it does not know,
//! [`presence_sent`] sends a disco#info query (`node='node#ver'`) from the server to that
//! full JID and remembers its id; the answer comes back through `im::iq` to [`on_answer`],
//! which recomputes the verification string (§5.1), hashes it with the named algorithm
//! (sha-1 and the SHA-2 family) and caches the features only when the hash is the `ver`.
//! An ill-formed answer (§5.4: duplicate identities, features or form types) or a wrong
//! hash is dropped, and the session's `+notify` interests stay unknown (it gets no
//! filtered notifications). Legacy caps without `hash` are ignored (§8.3).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use sha2::Digest as _;

use crate::{
    node::Node,
    proto::{element::Element, jid::Jid, ns},
    router::SessionHandle,
};

pub const CAPS: &str = "http://jabber.org/protocol/caps";

/// How many verified `ver`s the node remembers (clients of one version share one).
const MAX_CACHED: usize = 10_000;
/// How many disco#info queries may wait for an answer at once.
const MAX_PENDING: usize = 10_000;
/// How many other resources may wait for one query's answer.
const MAX_WAITING: usize = 100;
/// After this long without an answer, a `ver` is asked again (of whoever shows it next).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The features a client's capabilities stand for.
pub type Features = Arc<HashSet<String>>;

/// The `<c/>` of a presence: (hash, node, ver).
pub fn caps_of(presence: &Element) -> Option<(String, String, String)> {
    let c = presence.get_child("c", CAPS)?;
    Some((
        c.attr("hash")?.to_string(),
        c.attr("node")?.to_string(),
        c.attr("ver")?.to_string(),
    ))
}

/// A disco#info query the server sent and waits for.
struct Pending {
    from: Jid,
    /// Other resources that showed this `ver` meanwhile: they learn the answer too.
    waiting: Vec<Jid>,
    hash: String,
    ver: String,
    sent: Instant,
}

/// The node's verified capabilities and its queries in flight.
#[derive(Default)]
pub struct Caps {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    verified: HashMap<String, Features>,
    /// Insertion order of `verified`, for eviction.
    order: VecDeque<String>,
    /// By iq id.
    pending: HashMap<String, Pending>,
}

impl Caps {
    /// The features of a verified `ver`.
    pub fn get(&self, ver: &str) -> Option<Features> {
        self.lock().verified.get(ver).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a verified `ver`, forgetting the oldest past [`MAX_CACHED`].
    pub fn insert(&self, ver: String, features: Features) {
        let mut inner = self.lock();
        if inner.verified.insert(ver.clone(), features).is_none() {
            inner.order.push_back(ver);
        }
        while inner.order.len() > MAX_CACHED {
            if let Some(old) = inner.order.pop_front() {
                inner.verified.remove(&old);
            }
        }
    }

    /// Notes a query for `ver` about to be sent to `from` under `id`; false when one is
    /// already waiting for this `ver` (`from` then learns its answer too) or too many
    /// wait.
    fn start_query(&self, id: &str, from: &Jid, hash: &str, ver: &str) -> bool {
        let mut inner = self.lock();
        inner
            .pending
            .retain(|_, p| p.sent.elapsed() < QUERY_TIMEOUT);
        if let Some(p) = inner.pending.values_mut().find(|p| p.ver == ver) {
            if p.waiting.len() < MAX_WAITING && p.from != *from && !p.waiting.contains(from) {
                p.waiting.push(from.clone());
            }
            return false;
        }
        if inner.pending.len() >= MAX_PENDING {
            return false;
        }
        inner.pending.insert(
            id.to_string(),
            Pending {
                from: from.clone(),
                waiting: Vec::new(),
                hash: hash.to_string(),
                ver: ver.to_string(),
                sent: Instant::now(),
            },
        );
        true
    }

    /// Takes the query an answer with this id from `from` is for.
    fn take_query(&self, id: &str, from: &Jid) -> Option<Pending> {
        let mut inner = self.lock();
        if inner.pending.get(id).is_some_and(|p| p.from == *from) {
            return inner.pending.remove(id);
        }
        None
    }
}

/// The features of a session's current capabilities, if they are verified.
pub fn features_of(node: &Node, session: &SessionHandle) -> Option<Features> {
    let presence = session.presence()?;
    let (_, _, ver) = caps_of(&presence)?;
    node.caps.get(&ver)
}

/// A session sent available presence (`initial`: its first): ask for its capabilities if
/// they are not known, else send what PEP owes a resource that comes online.
pub async fn presence_sent(
    node: &Node,
    me: &Arc<SessionHandle>,
    presence: &Element,
    initial: bool,
) {
    let Some((hash, caps_node, ver)) = caps_of(presence) else {
        return;
    };
    if node.caps.get(&ver).is_some() {
        if initial {
            crate::xep::pep::came_online(node, me).await;
        }
        return;
    }
    if hasher(&hash).is_none() {
        return;
    }
    let id = format!("caps-{}", crate::im::random_id());
    if !node.caps.start_query(&id, &me.jid, &hash, &ver) {
        return;
    }
    me.deliver(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("from", me.jid.domain())
            .with_attr("to", me.jid.to_string())
            .with_child(
                Element::new("query", ns::DISCO_INFO)
                    .with_attr("node", format!("{caps_node}#{ver}")),
            ),
    );
}

/// An iq result or error from `me` to the server: if it answers a capabilities query,
/// verifies and caches it and returns true (it is handled).
pub async fn on_answer(node: &Node, me: &Arc<SessionHandle>, iq: &Element) -> bool {
    let Some(id) = iq.attr("id").filter(|id| id.starts_with("caps-")) else {
        return false;
    };
    let Some(pending) = node.caps.take_query(id, &me.jid) else {
        return false;
    };
    let Some(query) = iq
        .get_child("query", ns::DISCO_INFO)
        .filter(|_| iq.attr("type") == Some("result"))
    else {
        return true;
    };
    match verify(&pending.hash, &pending.ver, query) {
        Ok(features) => {
            node.caps.insert(pending.ver.clone(), Arc::new(features));
            // The resources may have come online waiting for this.
            crate::xep::pep::came_online(node, me).await;
            for jid in &pending.waiting {
                if let Some(s) = node.router.session(jid)
                    && features_of(node, &s).is_some()
                {
                    crate::xep::pep::came_online(node, &s).await;
                }
            }
        }
        Err(why) => tracing::info!(ver = %pending.ver, why, "capabilities not verified"),
    }
    true
}

/// A hash function over bytes.
type Digest = fn(&[u8]) -> Vec<u8>;

/// The hash function an XEP-0115 `hash` names (IANA "Hash Function Textual Names").
fn hasher(name: &str) -> Option<Digest> {
    Some(match name {
        "sha-1" => |b: &[u8]| sha1::Sha1::digest(b).to_vec(),
        "sha-224" => |b: &[u8]| sha2::Sha224::digest(b).to_vec(),
        "sha-256" => |b: &[u8]| sha2::Sha256::digest(b).to_vec(),
        "sha-384" => |b: &[u8]| sha2::Sha384::digest(b).to_vec(),
        "sha-512" => |b: &[u8]| sha2::Sha512::digest(b).to_vec(),
        _ => return None,
    })
}

/// The verification string of a disco#info answer (XEP-0115 §5.1), or why the answer is
/// ill-formed (§5.4).
pub fn verification_string(query: &Element) -> Result<String, &'static str> {
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or_default(),
                i.attr("type").unwrap_or_default(),
                i.attr("xml:lang").unwrap_or_default(),
                i.attr("name").unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    if identities.windows(2).any(|w| w[0] == w[1]) {
        return Err("the same identity appears twice");
    }
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort_unstable();
    if features.windows(2).any(|w| w[0] == w[1]) {
        return Err("the same feature appears twice");
    }
    let mut forms: Vec<(String, String)> = Vec::new();
    for x in query.children().filter(|c| c.is("x", ns::DATA_FORMS)) {
        let fields: Vec<&Element> = x
            .children()
            .filter(|c| c.is("field", ns::DATA_FORMS))
            .collect();
        let Some(form_type) = fields.iter().find(|f| f.attr("var") == Some("FORM_TYPE")) else {
            continue; // §5.4 3.6: a form without FORM_TYPE is ignored.
        };
        if form_type.attr("type") != Some("hidden") {
            continue; // §5.4 3.6: nor is one whose FORM_TYPE is not hidden.
        }
        let name = form_type
            .child_text("value", ns::DATA_FORMS)
            .unwrap_or_default();
        let mut rest: Vec<(String, Vec<String>)> = fields
            .iter()
            .filter(|f| f.attr("var") != Some("FORM_TYPE"))
            .map(|f| {
                let mut values: Vec<String> = f
                    .children()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(Element::text)
                    .collect();
                values.sort();
                (f.attr("var").unwrap_or_default().to_string(), values)
            })
            .collect();
        rest.sort();
        let mut s = format!("{name}<");
        for (var, values) in rest {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
        forms.push((name, s));
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("two forms have the same FORM_TYPE");
    }
    let mut s = String::new();
    for i in identities {
        s.push_str(&i);
        s.push('<');
    }
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (_, f) in forms {
        s.push_str(&f);
    }
    Ok(s)
}

/// Checks that `query` hashes to `ver` with `hash` (§5.4); its features if so.
pub fn verify(hash: &str, ver: &str, query: &Element) -> Result<HashSet<String>, &'static str> {
    let digest = hasher(hash).ok_or("the hash function is not supported")?;
    let s = verification_string(query)?;
    if B64.encode(digest(s.as_bytes())) != ver {
        return Err("the answer does not hash to the advertised ver");
    }
    Ok(query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::stanza;

    /// XEP-0115 §5.2, the simple example.
    const SIMPLE: &str = "<query xmlns='http://jabber.org/protocol/disco#info' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
        <identity category='client' name='Exodus 0.9.1' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        </query>";

    /// XEP-0115 §5.3, the complex example (identities in two languages, an extended form).
    const COMPLEX: &str = "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
        <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
        <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        <x xmlns='jabber:x:data' type='result'>\
          <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
          <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
          <field var='os'><value>Mac</value></field>\
          <field var='os_version'><value>10.5.1</value></field>\
          <field var='software'><value>Psi</value></field>\
          <field var='software_version'><value>0.11</value></field>\
        </x></query>";

    fn query(xml: &str) -> Element {
        stanza(&format!(
            "<iq xmlns='jabber:client' type='result'>{xml}</iq>"
        ))
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .clone()
    }

    #[test]
    fn the_simple_example_of_section_5_2_verifies() {
        let q = query(SIMPLE);
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        let features = verify("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=", &q).unwrap();
        assert!(features.contains("http://jabber.org/protocol/muc"));
        assert_eq!(features.len(), 4);
    }

    #[test]
    fn the_complex_example_of_section_5_3_verifies() {
        let q = query(COMPLEX);
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
        );
        assert!(verify("sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=", &q).is_ok());
    }

    #[test]
    fn other_hashes_verify_and_a_wrong_ver_or_unknown_hash_does_not() {
        let q = query(SIMPLE);
        let s = verification_string(&q).unwrap();
        let ver = B64.encode(sha2::Sha256::digest(s.as_bytes()));
        assert!(verify("sha-256", &ver, &q).is_ok());
        assert!(verify("sha-1", &ver, &q).is_err());
        assert!(verify("md5", "QgayPKawpkPSDYmwT/WM94uAlu0=", &q).is_err());
        assert!(verify("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu1=", &q).is_err());
    }

    #[test]
    fn duplicate_identities_features_or_form_types_are_ill_formed() {
        let dup_feature = SIMPLE.replace(
            "<feature var='http://jabber.org/protocol/muc'/>",
            "<feature var='http://jabber.org/protocol/muc'/><feature var='http://jabber.org/protocol/muc'/>",
        );
        assert!(verification_string(&query(&dup_feature)).is_err());
        let dup_identity = SIMPLE.replace(
            "<feature var='http://jabber.org/protocol/caps'/>",
            "<identity category='client' name='Exodus 0.9.1' type='pc'/><feature var='http://jabber.org/protocol/caps'/>",
        );
        assert!(verification_string(&query(&dup_identity)).is_err());
        let form = "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>urn:a</value></field></x>";
        let dup_form = SIMPLE.replace("</query>", &format!("{form}{form}</query>"));
        assert!(verification_string(&query(&dup_form)).is_err());
        // A form without a hidden FORM_TYPE is left out, not fatal.
        let ignored = SIMPLE.replace(
            "</query>",
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:a</value></field></x></query>",
        );
        assert!(verify("sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=", &query(&ignored)).is_ok());
    }

    #[test]
    fn the_cache_forgets_the_oldest_ver_past_its_bound_and_queries_are_matched_by_sender() {
        let caps = Caps::default();
        for i in 0..MAX_CACHED + 1 {
            caps.insert(format!("v{i}"), Features::default());
        }
        assert!(caps.get("v0").is_none());
        assert!(caps.get(&format!("v{MAX_CACHED}")).is_some());

        let alice = Jid::parse("alice@example.com/desk").unwrap();
        let mallory = Jid::parse("mallory@example.com/x").unwrap();
        assert!(caps.start_query("caps-1", &alice, "sha-1", "X"));
        let phone = Jid::parse("alice@example.com/phone").unwrap();
        assert!(
            !caps.start_query("caps-2", &phone, "sha-1", "X"),
            "one query per ver"
        );
        assert!(caps.take_query("caps-1", &mallory).is_none());
        let answered = caps.take_query("caps-1", &alice).unwrap();
        assert_eq!(answered.ver, "X");
        assert_eq!(
            answered.waiting,
            [phone],
            "the other resource learns the answer"
        );
        assert!(caps.take_query("caps-1", &alice).is_none());
    }

    #[tokio::test]
    async fn the_node_asks_an_unknown_ver_and_caches_it_only_when_the_answer_verifies() {
        use crate::{
            im,
            node::testing::{bind, delivered, node_with_spec},
        };
        let (node, _dir) = node_with_spec(
            serde_json::json!({"domain": "example.com", "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        // bob answers with features that do not hash to his ver: nothing is cached, and
        // an answer is never answered.
        for (user, ver, answer, cached) in [
            ("bob", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", SIMPLE, false),
            ("alice", "QgayPKawpkPSDYmwT/WM94uAlu0=", SIMPLE, true),
        ] {
            let jid = format!("{user}@example.com/desk");
            let (me, mut to_me) = bind(&node, &jid);
            im::handle(&node, &me, stanza(&format!(
                "<presence xmlns='jabber:client' from='{jid}'><c xmlns='{CAPS}' hash='sha-1' node='http://code.google.com/p/exodus' ver='{ver}'/></presence>"
            ))).await;
            let out = delivered(&mut to_me);
            let ask = out
                .iter()
                .find(|s| s.name() == "iq" && s.attr("type") == Some("get"))
                .unwrap_or_else(|| panic!("no disco#info query in {out:?}"));
            let query = ask.get_child("query", ns::DISCO_INFO).unwrap();
            assert_eq!(
                query.attr("node"),
                Some(format!("http://code.google.com/p/exodus#{ver}").as_str())
            );
            assert_eq!(ask.attr("from"), Some("example.com"));
            let id = ask.attr("id").unwrap();
            im::handle(&node, &me, stanza(&format!(
                "<iq xmlns='jabber:client' from='{jid}' to='example.com' type='result' id='{id}'>{answer}</iq>"
            ))).await;
            assert!(delivered(&mut to_me).is_empty());
            assert_eq!(node.caps.get(ver).is_some(), cached, "{user}");
            let session = node.router.session(&me.jid).unwrap();
            assert_eq!(features_of(&node, &session).is_some(), cached);
        }
    }
}
