//! One XEP-0045 room as a state machine, without I/O: [`Room::presence`],
//! [`Room::message`] and [`Room::iq`] take a stanza from a real (full) JID and return an
//! [`Out`]: the stanzas to send (each addressed to a real JID), whether the room's saved
//! state changed, a groupchat message to archive, and whether the room is gone. The service
//! (`xep::muc`) holds the rooms, delivers what they return and does the storing.
//!
//! Occupants are local sessions, one per nick. Roles follow affiliations (owners and admins
//! are moderators, members participants, others participants or, in a moderated room,
//! visitors); a moderator changes roles, admins and owners change affiliations (owners the
//! owner and admin lists). Every occupant's presence carries its XEP-0421 occupant id, a
//! hash of the room's salt and the real bare JID, so it stays the same across nicks and
//! visits.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    node::format_utc,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_SID: &str = "urn:xmpp:sid:0";

/// History kept in memory for new occupants, at most, whatever the configuration says.
pub const MAX_HISTORY: usize = 200;

/// Who sees occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    #[default]
    Moderators,
    Anyone,
}

/// The `muc#roomconfig` fields a room has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// `passwordprotectedroom` is `Some`.
    pub password: Option<String>,
    /// None: the vhost's limit (or no limit).
    pub max_users: Option<u32>,
    pub whois: Whois,
    pub change_subject: bool,
    pub allow_invites: bool,
    pub allow_pm: bool,
    pub history_length: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_users: None,
            whois: Whois::Moderators,
            change_subject: false,
            allow_invites: false,
            allow_pm: true,
            history_length: 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Occupant {
    pub nick: String,
    /// The session's full JID.
    pub jid: Jid,
    pub role: Role,
    pub occupant_id: String,
    /// The occupant's last presence, without its MUC extensions.
    presence: Element,
}

/// A message of the discussion history.
#[derive(Clone, Debug)]
struct Past {
    message: Element,
    at: i64,
    chars: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub text: String,
    pub nick: String,
}

/// What the store keeps of a persistent room besides its affiliations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saved {
    pub config: Config,
    pub subject: Option<Subject>,
    pub salt: String,
}

/// A groupchat message to archive: its archive id, time, sender and the stanza as sent.
#[derive(Clone, Debug)]
pub struct Archived {
    pub id: String,
    pub at_us: i64,
    pub sender: Jid,
    pub nick: String,
    pub message: Element,
}

/// What handling one stanza asks of the service.
#[derive(Debug, Default)]
pub struct Out {
    pub send: Vec<Element>,
    /// The configuration, subject or affiliations changed: save a persistent room.
    pub changed: bool,
    pub archive: Option<Archived>,
    /// The room is destroyed (by its owner, or a temporary room left empty).
    pub destroyed: bool,
}

impl Out {
    fn one(e: Element) -> Self {
        Self {
            send: vec![e],
            ..Default::default()
        }
    }
}

/// An archive id and its time, for the message being handled (from `mam::IdGen`).
pub type NextId<'a> = &'a dyn Fn() -> (String, i64);

pub struct Room {
    /// The room's bare JID.
    pub jid: Jid,
    pub config: Config,
    pub affiliations: BTreeMap<Jid, (Affiliation, String)>,
    pub occupants: Vec<Occupant>,
    pub subject: Option<Subject>,
    /// Created by joining and waiting for its owner's configuration (XEP-0045 §10.1.2).
    pub locked: bool,
    /// The vhost's occupant limit, if any, above the room's own.
    pub max_users_limit: Option<u32>,
    /// Whether the room archives (the vhost's archive switch).
    pub archiving: bool,
    salt: String,
    history: VecDeque<Past>,
}

fn item(affiliation: Affiliation, role: Role) -> Element {
    Element::new("item", NS_USER)
        .with_attr("affiliation", affiliation.as_str())
        .with_attr("role", role.as_str())
}

fn status(code: u16) -> Element {
    Element::new("status", NS_USER).with_attr("code", code.to_string())
}

fn err(stanza: &Element, c: Condition, text: &str) -> Out {
    Out::one(error(stanza, c, Some(text)))
}

/// An error reply from the room; a presence error carries the `<x/>` of a join, as
/// XEP-0045 §7.2 shows it and clients match it.
pub fn error(stanza: &Element, c: Condition, text: Option<&str>) -> Element {
    let mut reply = error_reply(stanza, c, text);
    if stanza.name() == "presence" {
        reply.append_child(Element::new("x", NS_MUC));
    }
    reply
}

fn field_values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|v| v.is("value", ns::DATA_FORMS))
        .map(|v| v.text())
        .collect()
}

fn truthy(v: &str) -> bool {
    matches!(v.trim(), "1" | "true")
}

impl Room {
    /// A new room: `owner` created it by joining; it stays locked until configured.
    pub fn new(jid: Jid, owner: Jid, salt: String) -> Self {
        let mut room = Self::restored(
            jid,
            Saved {
                salt,
                ..Default::default()
            },
            Vec::new(),
        );
        room.affiliations
            .insert(owner.bare(), (Affiliation::Owner, String::new()));
        room.locked = true;
        room
    }

    /// A room as the store kept it.
    pub fn restored(jid: Jid, saved: Saved, affiliations: Vec<(Jid, Affiliation, String)>) -> Self {
        Self {
            jid,
            config: saved.config,
            affiliations: affiliations
                .into_iter()
                .map(|(j, a, r)| (j.bare(), (a, r)))
                .collect(),
            occupants: Vec::new(),
            subject: saved.subject,
            locked: false,
            max_users_limit: None,
            archiving: true,
            salt: saved.salt,
            history: VecDeque::new(),
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            config: self.config.clone(),
            subject: self.subject.clone(),
            salt: self.salt.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    /// The real JID's affiliation.
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.bare())
            .map_or(Affiliation::None, |(a, _)| *a)
    }

    /// The occupant that `jid` (a session's full JID) is.
    pub fn occupant_of(&self, jid: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.jid == *jid)
    }

    fn by_nick(&self, nick: &str) -> Option<usize> {
        self.occupants.iter().position(|o| o.nick == nick)
    }

    fn room_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// XEP-0421: stable for a real bare JID in this room, opaque to everyone.
    pub fn occupant_id(&self, real: &Jid) -> String {
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        h.update([0]);
        h.update(self.jid.to_string().as_bytes());
        h.update([0]);
        h.update(real.bare().to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..18])
    }

    fn max_users(&self) -> Option<u32> {
        match (self.config.max_users, self.max_users_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The presence of occupant `o` as `viewer` sees it, with extra status codes.
    fn presence_of(&self, o: &Occupant, viewer: &Occupant, codes: &[u16]) -> Element {
        let mut p = o.presence.clone();
        p.set_attr("from", self.room_jid(&o.nick));
        p.set_attr("to", viewer.jid.to_string());
        let mut it = item(self.affiliation(&o.jid), o.role);
        if self.config.whois == Whois::Anyone || viewer.role == Role::Moderator {
            it.set_attr("jid", o.jid.to_string());
        }
        let mut x = Element::new("x", NS_USER).with_child(it);
        for c in codes {
            x.append_child(status(*c));
        }
        if o.jid == viewer.jid {
            x.append_child(status(110));
        }
        p.append_child(x);
        p.append_child(Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", &o.occupant_id));
        p
    }

    /// Sends `o`'s presence to every occupant, `self_codes` to itself only.
    fn broadcast_presence(&self, o: &Occupant, codes: &[u16], self_codes: &[u16], out: &mut Out) {
        for viewer in &self.occupants {
            let mut all = codes.to_vec();
            if viewer.jid == o.jid {
                all.extend_from_slice(self_codes);
            }
            out.send.push(self.presence_of(o, viewer, &all));
        }
    }

    /// `o` (no longer an occupant) leaves: unavailable presence to itself and to the rest,
    /// with `codes`, and an optional `<reason/>`/`<actor/>` for a kick or ban.
    fn broadcast_leave(
        &self,
        o: &Occupant,
        affiliation: Affiliation,
        codes: &[u16],
        extra: Option<Element>,
        out: &mut Out,
    ) {
        for viewer in self.occupants.iter().chain(std::iter::once(o)) {
            let mut it = item(affiliation, Role::None);
            if self.config.whois == Whois::Anyone || viewer.role == Role::Moderator {
                it.set_attr("jid", o.jid.to_string());
            }
            if let Some(e) = &extra {
                for c in e.children() {
                    it.append_child(c.clone());
                }
            }
            let mut x = Element::new("x", NS_USER).with_child(it);
            for c in codes {
                x.append_child(status(*c));
            }
            if viewer.jid == o.jid {
                x.append_child(status(110));
            }
            out.send.push(
                Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", self.room_jid(&o.nick))
                    .with_attr("to", viewer.jid.to_string())
                    .with_child(x)
                    .with_child(
                        Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", &o.occupant_id),
                    ),
            );
        }
    }

    /// A temporary room left empty is destroyed.
    fn after_leave(&self, out: &mut Out) {
        if self.occupants.is_empty() && !self.config.persistent {
            out.destroyed = true;
        }
    }

    // ---- presence ------------------------------------------------------------------------

    /// Presence from `from` to `nick` in this room: join, change, nick change, leave.
    pub fn presence(&mut self, from: &Jid, nick: &str, stanza: &Element, now: i64) -> Out {
        let kind = stanza.attr("type").unwrap_or("available");
        let current = self.occupants.iter().position(|o| o.jid == *from);
        match (kind, current) {
            ("unavailable" | "error", Some(i)) => {
                let o = self.occupants.remove(i);
                let mut out = Out::default();
                self.broadcast_leave(&o, self.affiliation(&o.jid), &[], None, &mut out);
                if let Some(s) = stanza.child_text("status", ns::CLIENT) {
                    for p in &mut out.send {
                        p.append_child(Element::new("status", ns::CLIENT).with_text(s.clone()));
                    }
                }
                self.after_leave(&mut out);
                out
            }
            ("unavailable" | "error", None) => Out::default(),
            ("available", Some(i)) if self.occupants[i].nick == nick => {
                self.occupants[i].presence = strip(stanza);
                let o = self.occupants[i].clone();
                let mut out = Out::default();
                self.broadcast_presence(&o, &[], &[], &mut out);
                out
            }
            ("available", Some(i)) => self.change_nick(i, nick, stanza),
            ("available", None) => self.join(from, nick, stanza, now),
            _ => err(stanza, Condition::BadRequest, "Unknown presence type."),
        }
    }

    fn join(&mut self, from: &Jid, nick: &str, stanza: &Element, now: i64) -> Out {
        let affiliation = self.affiliation(from);
        let created = self.locked && self.occupants.is_empty() && affiliation == Affiliation::Owner;
        if self.locked && !created {
            return err(
                stanza,
                Condition::ItemNotFound,
                "The room is being created and not open yet.",
            );
        }
        if affiliation == Affiliation::Outcast {
            return err(
                stanza,
                Condition::Forbidden,
                "You are banned from this room.",
            );
        }
        if self.config.members_only && affiliation < Affiliation::Member {
            return err(
                stanza,
                Condition::RegistrationRequired,
                "The room is for members only.",
            );
        }
        let muc = stanza.get_child("x", NS_MUC);
        if let Some(password) = &self.config.password
            && affiliation < Affiliation::Owner
            && muc
                .and_then(|x| x.child_text("password", NS_MUC))
                .as_deref()
                != Some(password)
        {
            return err(
                stanza,
                Condition::NotAuthorized,
                "The room needs a password.",
            );
        }
        if self.by_nick(nick).is_some() {
            return err(
                stanza,
                Condition::Conflict,
                "That nickname is already in use in the room.",
            );
        }
        if let Some(max) = self.max_users()
            && self.occupants.len() >= max as usize
            && affiliation < Affiliation::Admin
        {
            return err(stanza, Condition::ServiceUnavailable, "The room is full.");
        }
        let role = self.default_role(affiliation);
        let me = Occupant {
            nick: nick.to_string(),
            jid: from.clone(),
            role,
            occupant_id: self.occupant_id(from),
            presence: strip(stanza),
        };
        let mut out = Out::default();
        // Everyone already there, to the newcomer (XEP-0045 §7.2.3).
        for o in &self.occupants {
            out.send.push(self.presence_of(o, &me, &[]));
        }
        self.occupants.push(me.clone());
        let mut self_codes = vec![];
        if self.config.whois == Whois::Anyone {
            self_codes.push(100);
        }
        if self.archiving {
            self_codes.push(170);
        }
        if created {
            self_codes.push(201);
        }
        // The nick as the client wrote it differs from the normalised one (§7.2.9).
        if stanza
            .attr("to")
            .and_then(|t| t.split_once('/'))
            .is_some_and(|(_, asked)| asked != nick)
        {
            self_codes.push(210);
        }
        self.broadcast_presence(&me, &[], &self_codes, &mut out);
        self.send_history(
            &me,
            muc.and_then(|x| x.get_child("history", NS_MUC)),
            now,
            &mut out,
        );
        // The subject comes last, even when empty (XEP-0045 §7.2.15).
        let mut subject = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("to", from.to_string());
        match &self.subject {
            Some(s) => {
                subject.set_attr("from", self.room_jid(&s.nick));
                subject.append_child(Element::new("subject", ns::CLIENT).with_text(&s.text));
            }
            None => {
                subject.set_attr("from", self.jid.to_string());
                subject.append_child(Element::new("subject", ns::CLIENT));
            }
        }
        out.send.push(subject);
        out
    }

    /// The discussion history the newcomer asked for (XEP-0045 §7.2.14).
    fn send_history(&self, me: &Occupant, asked: Option<&Element>, now: i64, out: &mut Out) {
        let num = |name: &str| {
            asked
                .and_then(|h| h.attr(name))
                .and_then(|v| v.parse::<i64>().ok())
        };
        let max_stanzas = num("maxstanzas").unwrap_or(i64::MAX).max(0) as usize;
        let max_chars = num("maxchars").map(|c| c.max(0) as usize);
        let since = asked
            .and_then(|h| h.attr("since"))
            .and_then(crate::xep::mam::parse_datetime)
            .map(|us| us / 1_000_000);
        let after = [since, num("seconds").map(|s| now - s)]
            .into_iter()
            .flatten()
            .max();
        let mut picked: Vec<&Past> = Vec::new();
        let mut chars = 0;
        for p in self.history.iter().rev() {
            if picked.len() >= max_stanzas || after.is_some_and(|a| p.at < a) {
                break;
            }
            if let Some(max) = max_chars {
                if chars + p.chars > max {
                    break;
                }
                chars += p.chars;
            }
            picked.push(p);
        }
        for p in picked.into_iter().rev() {
            let mut m = p.message.clone();
            m.set_attr("to", me.jid.to_string());
            m.append_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", self.jid.to_string())
                    .with_attr("stamp", format_utc(p.at)),
            );
            out.send.push(m);
        }
    }

    fn change_nick(&mut self, i: usize, nick: &str, stanza: &Element) -> Out {
        if self.by_nick(nick).is_some() {
            return err(
                stanza,
                Condition::Conflict,
                "That nickname is already in use in the room.",
            );
        }
        let old = self.occupants[i].clone();
        let mut out = Out::default();
        // Unavailable with the new nick (303), then available as the new nick.
        for viewer in &self.occupants {
            let mut it = item(self.affiliation(&old.jid), old.role).with_attr("nick", nick);
            if self.config.whois == Whois::Anyone || viewer.role == Role::Moderator {
                it.set_attr("jid", old.jid.to_string());
            }
            let mut x = Element::new("x", NS_USER)
                .with_child(it)
                .with_child(status(303));
            if viewer.jid == old.jid {
                x.append_child(status(110));
            }
            out.send.push(
                Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", self.room_jid(&old.nick))
                    .with_attr("to", viewer.jid.to_string())
                    .with_child(x)
                    .with_child(
                        Element::new("occupant-id", NS_OCCUPANT_ID)
                            .with_attr("id", &old.occupant_id),
                    ),
            );
        }
        self.occupants[i].nick = nick.to_string();
        self.occupants[i].presence = strip(stanza);
        let o = self.occupants[i].clone();
        self.broadcast_presence(&o, &[], &[], &mut out);
        out
    }

    /// The session `from` went offline: it leaves as with unavailable presence.
    pub fn gone(&mut self, from: &Jid) -> Out {
        let Some(i) = self.occupants.iter().position(|o| o.jid == *from) else {
            return Out::default();
        };
        let o = self.occupants.remove(i);
        let mut out = Out::default();
        self.broadcast_leave(&o, self.affiliation(&o.jid), &[], None, &mut out);
        self.after_leave(&mut out);
        out
    }

    // ---- messages ------------------------------------------------------------------------

    /// A message from `from` to the room (`nick` None) or to an occupant.
    pub fn message(
        &mut self,
        from: &Jid,
        nick: Option<&str>,
        stanza: &Element,
        now: i64,
        next_id: NextId<'_>,
    ) -> Out {
        let kind = stanza.attr("type").unwrap_or("normal");
        if kind == "error" {
            return Out::default();
        }
        let Some(sender) = self.occupant_of(from).cloned() else {
            if nick.is_none() && kind != "groupchat" && stanza.has_child("x", NS_USER) {
                // A decline comes from someone invited, not an occupant.
                return self.decline(from, stanza);
            }
            return err(
                stanza,
                Condition::NotAcceptable,
                "Only occupants may send messages to the room.",
            );
        };
        match nick {
            Some(nick) => self.private_message(&sender, nick, stanza),
            None if kind == "groupchat" => self.groupchat(&sender, stanza, now, next_id),
            None if stanza.has_child("x", NS_USER) => self.invite(&sender, stanza),
            None => err(
                stanza,
                Condition::BadRequest,
                "Messages to the room are of type groupchat.",
            ),
        }
    }

    fn groupchat(
        &mut self,
        sender: &Occupant,
        stanza: &Element,
        now: i64,
        next_id: NextId<'_>,
    ) -> Out {
        if sender.role < Role::Participant {
            return err(
                stanza,
                Condition::Forbidden,
                "Visitors may not speak in this moderated room.",
            );
        }
        let subject = stanza.get_child("subject", ns::CLIENT).map(|s| s.text());
        let body = stanza.child_text("body", ns::CLIENT);
        if let Some(text) = &subject
            && body.is_none()
        {
            if !(sender.role == Role::Moderator || self.config.change_subject) {
                return err(
                    stanza,
                    Condition::Forbidden,
                    "Only moderators may change the subject of this room.",
                );
            }
            self.subject = (!text.is_empty()).then(|| Subject {
                text: text.clone(),
                nick: sender.nick.clone(),
            });
        }
        let mut m = stanza.clone();
        m.set_attr("from", self.room_jid(&sender.nick));
        m.remove_attr("to");
        // Only the room stamps ids in its name (XEP-0359 §5, XEP-0421 §4).
        let room = self.jid.to_string();
        m.remove_children(|c| {
            c.is("occupant-id", NS_OCCUPANT_ID)
                || (c.is("stanza-id", NS_SID) && c.attr("by") == Some(room.as_str()))
        });
        m.append_child(
            Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", &sender.occupant_id),
        );
        let mut out = Out {
            changed: subject.is_some() && body.is_none(),
            ..Default::default()
        };
        if body.is_some() && self.archiving && !m.has_child("no-store", crate::xep::mam::NS_HINTS) {
            let (id, at_us) = next_id();
            m.append_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", &room)
                    .with_attr("id", &id),
            );
            out.archive = Some(Archived {
                id,
                at_us,
                sender: sender.jid.bare(),
                nick: sender.nick.clone(),
                message: m.clone(),
            });
        }
        if body.is_some() && self.config.history_length > 0 {
            self.history.push_back(Past {
                chars: m.to_xml().chars().count(),
                message: m.clone(),
                at: now,
            });
            let keep = (self.config.history_length as usize).min(MAX_HISTORY);
            while self.history.len() > keep {
                self.history.pop_front();
            }
        }
        for o in &self.occupants {
            let mut copy = m.clone();
            copy.set_attr("to", o.jid.to_string());
            out.send.push(copy);
        }
        out
    }

    fn private_message(&self, sender: &Occupant, nick: &str, stanza: &Element) -> Out {
        if stanza.attr("type") == Some("groupchat") {
            return err(
                stanza,
                Condition::BadRequest,
                "A groupchat message goes to the room, not to an occupant.",
            );
        }
        if !self.config.allow_pm && sender.role != Role::Moderator {
            return err(
                stanza,
                Condition::NotAllowed,
                "Private messages are not allowed in this room.",
            );
        }
        let Some(i) = self.by_nick(nick) else {
            return err(
                stanza,
                Condition::ItemNotFound,
                "Nobody in the room has that nickname.",
            );
        };
        let mut m = stanza.clone();
        m.set_attr("from", self.room_jid(&sender.nick));
        m.set_attr("to", self.occupants[i].jid.to_string());
        m.remove_children(|c| c.is("occupant-id", NS_OCCUPANT_ID));
        m.append_child(Element::new("x", NS_USER));
        m.append_child(
            Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", &sender.occupant_id),
        );
        Out::one(m)
    }

    /// A mediated invitation (XEP-0045 §7.8.2): sent on to each invitee from the room.
    fn invite(&mut self, sender: &Occupant, stanza: &Element) -> Out {
        let x = stanza
            .get_child("x", NS_USER)
            .expect("checked by the caller");
        let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", NS_USER)).collect();
        if invites.is_empty() {
            return err(
                stanza,
                Condition::BadRequest,
                "Nothing to do with this message.",
            );
        }
        let affiliation = self.affiliation(&sender.jid);
        let may = affiliation >= Affiliation::Admin
            || sender.role == Role::Moderator
            || (self.config.allow_invites && !self.config.members_only)
            || (self.config.allow_invites && affiliation >= Affiliation::Member);
        if !may {
            return err(
                stanza,
                Condition::Forbidden,
                "You may not invite others to this room.",
            );
        }
        let mut out = Out::default();
        for inv in invites {
            let Some(to) = inv.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return err(
                    stanza,
                    Condition::JidMalformed,
                    "The invitee's JID is not valid.",
                );
            };
            // Invited into a members-only room: the invitee becomes a member.
            if self.config.members_only && self.affiliation(&to) == Affiliation::None {
                self.affiliations
                    .insert(to.bare(), (Affiliation::Member, String::new()));
                out.changed = true;
            }
            let mut forwarded =
                Element::new("invite", NS_USER).with_attr("from", sender.jid.bare().to_string());
            if let Some(reason) = inv.child_text("reason", NS_USER) {
                forwarded.append_child(Element::new("reason", NS_USER).with_text(reason));
            }
            let mut ux = Element::new("x", NS_USER).with_child(forwarded);
            if let Some(p) = &self.config.password {
                ux.append_child(Element::new("password", NS_USER).with_text(p));
            }
            out.send.push(
                Element::new("message", ns::CLIENT)
                    .with_attr("from", self.jid.to_string())
                    .with_attr("to", to.to_string())
                    .with_opt_attr("id", stanza.attr("id"))
                    .with_child(ux)
                    .with_child(
                        Element::new("x", "jabber:x:conference")
                            .with_attr("jid", self.jid.to_string()),
                    ),
            );
        }
        out
    }

    /// A declined invitation goes back to whoever invited (XEP-0045 §7.8.2).
    fn decline(&self, from: &Jid, stanza: &Element) -> Out {
        let x = stanza
            .get_child("x", NS_USER)
            .expect("checked by the caller");
        let Some(decline) = x.get_child("decline", NS_USER) else {
            return err(
                stanza,
                Condition::NotAcceptable,
                "Only occupants may send messages to the room.",
            );
        };
        let Some(to) = decline.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return Out::default();
        };
        let mut d = Element::new("decline", NS_USER).with_attr("from", from.bare().to_string());
        if let Some(reason) = decline.child_text("reason", NS_USER) {
            d.append_child(Element::new("reason", NS_USER).with_text(reason));
        }
        Out::one(
            Element::new("message", ns::CLIENT)
                .with_attr("from", self.jid.to_string())
                .with_attr("to", to.to_string())
                .with_child(Element::new("x", NS_USER).with_child(d)),
        )
    }

    // ---- iq ------------------------------------------------------------------------------

    /// An iq from `from` to the room (`nick` None) or to an occupant. MAM queries are the
    /// service's (they read the store); see [`Room::may_read_archive`].
    pub fn iq(&mut self, from: &Jid, nick: Option<&str>, iq: &Element) -> Out {
        let kind = iq.attr("type").unwrap_or_default();
        if !matches!(kind, "get" | "set") {
            return Out::default();
        }
        let Some(payload) = iq.children().next() else {
            return err(iq, Condition::BadRequest, "An empty request.");
        };
        if let Some(nick) = nick {
            // XEP-0410: a ping to one's own occupant JID says whether one is still joined.
            let me = self.occupant_of(from);
            return match (payload.is("ping", ns::PING), me) {
                (_, None) => err(iq, Condition::NotAcceptable, "You are not in this room."),
                (true, Some(_)) if self.by_nick(nick).is_some() => Out::one(iq_result(iq)),
                (_, Some(_)) if self.by_nick(nick).is_none() => err(
                    iq,
                    Condition::ItemNotFound,
                    "Nobody in the room has that nickname.",
                ),
                _ => err(
                    iq,
                    Condition::ServiceUnavailable,
                    "Queries to occupants are not passed on.",
                ),
            };
        }
        let get = kind == "get";
        match (payload.ns(), payload.name(), get) {
            (ns::DISCO_INFO, "query", true) => {
                Out::one(iq_result(iq).with_child(self.disco_info()))
            }
            (ns::DISCO_ITEMS, "query", true) => {
                Out::one(iq_result(iq).with_child(Element::new("query", ns::DISCO_ITEMS)))
            }
            (ns::PING, "ping", true) => Out::one(iq_result(iq)),
            (NS_OWNER, "query", _) => self.owner(from, iq, payload, get),
            (NS_ADMIN, "query", _) => self.admin(from, iq, payload, get),
            _ => err(
                iq,
                Condition::ServiceUnavailable,
                "The room does not answer that.",
            ),
        }
    }

    /// Whether `from` may read the room's archive: the room's occupants, and anyone when
    /// it is public and open.
    pub fn may_read_archive(&self, from: &Jid) -> bool {
        self.occupant_of(from).is_some()
            || (self.config.public
                && !self.config.members_only
                && self.config.password.is_none()
                && self.affiliation(from) != Affiliation::Outcast)
            || self.affiliation(from) >= Affiliation::Member
    }

    /// The room's disco#info (XEP-0045 §6.4) with its `muc#roominfo` form.
    pub fn disco_info(&self) -> Element {
        let c = &self.config;
        let mut q = Element::new("query", ns::DISCO_INFO).with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr(
                    "name",
                    if c.name.is_empty() {
                        self.jid.node().unwrap_or_default()
                    } else {
                        &c.name
                    },
                ),
        );
        let mut features = vec![
            NS_MUC,
            ns::DISCO_INFO,
            NS_OCCUPANT_ID,
            if c.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if c.public { "muc_public" } else { "muc_hidden" },
            if c.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if c.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if c.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if c.whois == Whois::Anyone {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
        ];
        if self.archiving {
            features.extend([NS_MAM, NS_SID]);
        }
        for f in features {
            q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        let field = |var: &str, value: String| {
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
        };
        q.append_child(
            Element::new("x", ns::DATA_FORMS)
                .with_attr("type", "result")
                .with_child(field("FORM_TYPE", NS_ROOMINFO.into()).with_attr("type", "hidden"))
                .with_child(field("muc#roominfo_description", c.description.clone()))
                .with_child(field(
                    "muc#roominfo_occupants",
                    self.occupants.len().to_string(),
                ))
                .with_child(field(
                    "muc#roominfo_subject",
                    self.subject
                        .as_ref()
                        .map(|s| s.text.clone())
                        .unwrap_or_default(),
                ))
                .with_child(field(
                    "muc#roominfo_changesubject",
                    if c.change_subject { "1" } else { "0" }.into(),
                )),
        );
        q
    }

    // ---- owner: configuration and destruction (XEP-0045 §10) -----------------------------

    fn owner(&mut self, from: &Jid, iq: &Element, payload: &Element, get: bool) -> Out {
        if self.affiliation(from) != Affiliation::Owner {
            return err(iq, Condition::Forbidden, "Only owners may do that.");
        }
        if get {
            return Out::one(
                iq_result(iq)
                    .with_child(Element::new("query", NS_OWNER).with_child(self.config_form())),
            );
        }
        if let Some(destroy) = payload.get_child("destroy", NS_OWNER) {
            let mut out = Out {
                destroyed: true,
                ..Default::default()
            };
            for o in std::mem::take(&mut self.occupants) {
                let mut d = Element::new("destroy", NS_USER);
                if let Some(j) = destroy.attr("jid") {
                    d.set_attr("jid", j);
                }
                if let Some(r) = destroy.child_text("reason", NS_OWNER) {
                    d.append_child(Element::new("reason", NS_USER).with_text(r));
                }
                out.send.push(
                    Element::new("presence", ns::CLIENT)
                        .with_attr("type", "unavailable")
                        .with_attr("from", self.room_jid(&o.nick))
                        .with_attr("to", o.jid.to_string())
                        .with_child(
                            Element::new("x", NS_USER)
                                .with_child(item(self.affiliation(&o.jid), Role::None))
                                .with_child(d)
                                .with_child(status(110)),
                        ),
                );
            }
            out.send.push(iq_result(iq));
            return out;
        }
        let Some(form) = payload.get_child("x", ns::DATA_FORMS) else {
            return err(iq, Condition::BadRequest, "Expected a configuration form.");
        };
        match form.attr("type") {
            Some("cancel") => {
                let mut out = Out::one(iq_result(iq));
                if self.locked {
                    // A new room whose creation is cancelled is destroyed (§10.1.3).
                    out.destroyed = true;
                    for o in std::mem::take(&mut self.occupants) {
                        out.send.push(
                            Element::new("presence", ns::CLIENT)
                                .with_attr("type", "unavailable")
                                .with_attr("from", self.room_jid(&o.nick))
                                .with_attr("to", o.jid.to_string()),
                        );
                    }
                }
                out
            }
            Some("submit") => match self.apply_form(form) {
                Ok(codes) => {
                    self.locked = false;
                    let mut out = Out::one(iq_result(iq));
                    out.changed = true;
                    if !codes.is_empty() {
                        for o in &self.occupants {
                            let mut x = Element::new("x", NS_USER);
                            for c in &codes {
                                x.append_child(status(*c));
                            }
                            out.send.push(
                                Element::new("message", ns::CLIENT)
                                    .with_attr("type", "groupchat")
                                    .with_attr("from", self.jid.to_string())
                                    .with_attr("to", o.jid.to_string())
                                    .with_child(x),
                            );
                        }
                    }
                    out
                }
                Err(text) => err(iq, Condition::NotAcceptable, &text),
            },
            _ => err(
                iq,
                Condition::BadRequest,
                "The form must be a submit or a cancel.",
            ),
        }
    }

    /// The `muc#roomconfig` form with the room's values.
    pub fn config_form(&self) -> Element {
        let c = &self.config;
        let f = |var: &str, kind: &str, label: &str, values: Vec<String>| {
            let mut e = Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_attr("type", kind)
                .with_attr("label", label);
            for v in values {
                e.append_child(Element::new("value", ns::DATA_FORMS).with_text(v));
            }
            e
        };
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_string()];
        let mut whois = f(
            "muc#roomconfig_whois",
            "list-single",
            "Who may discover real JIDs",
            vec![match c.whois {
                Whois::Anyone => "anyone".into(),
                Whois::Moderators => "moderators".into(),
            }],
        );
        for (v, l) in [("moderators", "Moderators only"), ("anyone", "Anyone")] {
            whois.append_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_attr("label", l)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(v)),
            );
        }
        Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(f("FORM_TYPE", "hidden", "", vec![NS_ROOMCONFIG.into()]))
            .with_child(f(
                "muc#roomconfig_roomname",
                "text-single",
                "Name",
                vec![c.name.clone()],
            ))
            .with_child(f(
                "muc#roomconfig_roomdesc",
                "text-single",
                "Description",
                vec![c.description.clone()],
            ))
            .with_child(f(
                "muc#roomconfig_persistentroom",
                "boolean",
                "Persistent",
                b(c.persistent),
            ))
            .with_child(f(
                "muc#roomconfig_publicroom",
                "boolean",
                "Listed in the directory",
                b(c.public),
            ))
            .with_child(f(
                "muc#roomconfig_membersonly",
                "boolean",
                "Members only",
                b(c.members_only),
            ))
            .with_child(f(
                "muc#roomconfig_moderatedroom",
                "boolean",
                "Moderated",
                b(c.moderated),
            ))
            .with_child(f(
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                "Password protected",
                b(c.password.is_some()),
            ))
            .with_child(f(
                "muc#roomconfig_roomsecret",
                "text-private",
                "Password",
                vec![c.password.clone().unwrap_or_default()],
            ))
            .with_child(f(
                "muc#roomconfig_maxusers",
                "text-single",
                "Most occupants",
                vec![c.max_users.map(|m| m.to_string()).unwrap_or_default()],
            ))
            .with_child(whois)
            .with_child(f(
                "muc#roomconfig_changesubject",
                "boolean",
                "Occupants may change the subject",
                b(c.change_subject),
            ))
            .with_child(f(
                "muc#roomconfig_allowinvites",
                "boolean",
                "Occupants may invite others",
                b(c.allow_invites),
            ))
            .with_child(f(
                "muc#roomconfig_allowpm",
                "list-single",
                "Who may send private messages",
                vec![if c.allow_pm { "anyone" } else { "moderators" }.into()],
            ))
            .with_child(f(
                "muc#roomconfig_historylength",
                "text-single",
                "Messages of history for newcomers",
                vec![c.history_length.to_string()],
            ))
    }

    /// Applies a submitted configuration form; the status codes of XEP-0045 §10.2.1.
    fn apply_form(&mut self, form: &Element) -> Result<Vec<u16>, String> {
        let mut c = self.config.clone();
        let mut password_on = None;
        let mut secret = None;
        for field in form.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
            let values = field_values(field);
            let v = values.first().cloned().unwrap_or_default();
            match field.attr("var").unwrap_or_default() {
                "FORM_TYPE" if v != NS_ROOMCONFIG => {
                    return Err(format!("The form's FORM_TYPE must be {NS_ROOMCONFIG}."));
                }
                "muc#roomconfig_roomname" => c.name = v,
                "muc#roomconfig_roomdesc" => c.description = v,
                "muc#roomconfig_persistentroom" => c.persistent = truthy(&v),
                "muc#roomconfig_publicroom" => c.public = truthy(&v),
                "muc#roomconfig_membersonly" => c.members_only = truthy(&v),
                "muc#roomconfig_moderatedroom" => c.moderated = truthy(&v),
                "muc#roomconfig_passwordprotectedroom" => password_on = Some(truthy(&v)),
                "muc#roomconfig_roomsecret" => secret = Some(v),
                "muc#roomconfig_maxusers" => {
                    c.max_users = match v.trim() {
                        "" | "none" => None,
                        n => Some(
                            n.parse()
                                .map_err(|_| format!("maxusers is not a number: {n}."))?,
                        ),
                    }
                }
                "muc#roomconfig_whois" => {
                    c.whois = match v.as_str() {
                        "anyone" => Whois::Anyone,
                        "moderators" | "" => Whois::Moderators,
                        other => return Err(format!("whois cannot be {other}.")),
                    }
                }
                "muc#roomconfig_changesubject" => c.change_subject = truthy(&v),
                "muc#roomconfig_allowinvites" => c.allow_invites = truthy(&v),
                "muc#roomconfig_allowpm" => {
                    c.allow_pm = !matches!(v.as_str(), "none" | "moderators" | "0" | "false")
                }
                "muc#roomconfig_historylength" | "muc#maxhistoryfetch" => {
                    c.history_length = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("historylength is not a number: {v}."))?
                }
                // Other forms' fields (ejabberd's, Prosody's) are ignored, as XEP-0004 allows.
                _ => {}
            }
        }
        match (password_on, secret) {
            (Some(false), _) => c.password = None,
            (_, Some(s)) if !s.is_empty() => c.password = Some(s),
            (Some(true), _) if c.password.is_none() => {
                return Err("A password-protected room needs a roomsecret.".into());
            }
            _ => {}
        }
        let mut codes = Vec::new();
        if c.whois != self.config.whois {
            codes.push(if c.whois == Whois::Anyone { 172 } else { 173 });
        }
        if c.history_length < self.config.history_length {
            let keep = c.history_length as usize;
            while self.history.len() > keep {
                self.history.pop_front();
            }
        }
        self.config = c;
        // In a members-only room, whoever is no longer allowed goes (status 322).
        Ok(codes)
    }

    // ---- admin: roles and affiliations (XEP-0045 §8, §9) ---------------------------------

    fn admin(&mut self, from: &Jid, iq: &Element, payload: &Element, get: bool) -> Out {
        let actor_aff = self.affiliation(from);
        let actor_role = self.occupant_of(from).map_or(Role::None, |o| o.role);
        let items: Vec<&Element> = payload
            .children()
            .filter(|c| c.is("item", NS_ADMIN))
            .collect();
        if items.is_empty() {
            return err(iq, Condition::BadRequest, "Expected an item.");
        }
        if get {
            let it = items[0];
            let mut q = Element::new("query", NS_ADMIN);
            if let Some(a) = it.attr("affiliation").and_then(Affiliation::parse) {
                if actor_aff < Affiliation::Admin {
                    return err(
                        iq,
                        Condition::Forbidden,
                        "Only admins and owners may see that list.",
                    );
                }
                for (jid, (aff, reason)) in &self.affiliations {
                    if *aff == a {
                        let mut e = Element::new("item", NS_ADMIN)
                            .with_attr("affiliation", a.as_str())
                            .with_attr("jid", jid.to_string());
                        if !reason.is_empty() {
                            e.append_child(Element::new("reason", NS_ADMIN).with_text(reason));
                        }
                        q.append_child(e);
                    }
                }
            } else if let Some(r) = it.attr("role").and_then(Role::parse) {
                if actor_role != Role::Moderator {
                    return err(
                        iq,
                        Condition::Forbidden,
                        "Only moderators may see that list.",
                    );
                }
                for o in self.occupants.iter().filter(|o| o.role == r) {
                    q.append_child(
                        Element::new("item", NS_ADMIN)
                            .with_attr("affiliation", self.affiliation(&o.jid).as_str())
                            .with_attr("role", r.as_str())
                            .with_attr("nick", &o.nick)
                            .with_attr("jid", o.jid.to_string()),
                    );
                }
            } else {
                return err(
                    iq,
                    Condition::BadRequest,
                    "Ask for an affiliation or a role.",
                );
            }
            return Out::one(iq_result(iq).with_child(q));
        }
        // Every item is checked before any is applied: all or nothing (§9.1).
        let mut plan: Vec<Change> = Vec::new();
        for it in items {
            let reason = it.child_text("reason", NS_ADMIN).unwrap_or_default();
            if let Some(r) = it.attr("role") {
                let Some(role) = Role::parse(r) else {
                    return err(iq, Condition::BadRequest, "Unknown role.");
                };
                let Some(i) = it.attr("nick").and_then(|n| self.by_nick(n)) else {
                    return err(
                        iq,
                        Condition::ItemNotFound,
                        "Nobody in the room has that nickname.",
                    );
                };
                let target_aff = self.affiliation(&self.occupants[i].jid);
                if actor_role != Role::Moderator {
                    return err(
                        iq,
                        Condition::Forbidden,
                        "Only moderators may change roles.",
                    );
                }
                if (role == Role::Moderator || self.occupants[i].role == Role::Moderator)
                    && actor_aff < Affiliation::Admin
                {
                    return err(
                        iq,
                        Condition::NotAllowed,
                        "Only admins and owners may change a moderator's role.",
                    );
                }
                if target_aff >= Affiliation::Admin && role < Role::Moderator {
                    return err(
                        iq,
                        Condition::NotAllowed,
                        "An admin or owner keeps the moderator role.",
                    );
                }
                plan.push(Change::Role(i, role, reason));
            } else if let Some(a) = it.attr("affiliation") {
                let Some(aff) = Affiliation::parse(a) else {
                    return err(iq, Condition::BadRequest, "Unknown affiliation.");
                };
                let target = match (it.attr("jid"), it.attr("nick")) {
                    (Some(j), _) => match Jid::parse(j) {
                        Ok(j) => j.bare(),
                        Err(_) => return err(iq, Condition::JidMalformed, "Not a valid JID."),
                    },
                    (None, Some(n)) => match self.by_nick(n) {
                        Some(i) => self.occupants[i].jid.bare(),
                        None => {
                            return err(
                                iq,
                                Condition::ItemNotFound,
                                "Nobody in the room has that nickname.",
                            );
                        }
                    },
                    _ => {
                        return err(
                            iq,
                            Condition::BadRequest,
                            "An affiliation item needs a jid.",
                        );
                    }
                };
                let current = self.affiliation(&target);
                let needs_owner = aff >= Affiliation::Admin || current >= Affiliation::Admin;
                if actor_aff < Affiliation::Admin || (needs_owner && actor_aff < Affiliation::Owner)
                {
                    return err(
                        iq,
                        Condition::Forbidden,
                        "You may not change that affiliation.",
                    );
                }
                plan.push(Change::Affiliation(target, aff, reason));
            } else {
                return err(
                    iq,
                    Condition::BadRequest,
                    "An item needs a role or an affiliation.",
                );
            }
        }
        // The room keeps an owner (§10.6).
        let owners_left = self
            .affiliations
            .iter()
            .filter(|(j, (a, _))| {
                *a == Affiliation::Owner
                    && !plan.iter().any(|c| matches!(c, Change::Affiliation(t, n, _) if t == *j && *n != Affiliation::Owner))
            })
            .count()
            + plan.iter().filter(|c| matches!(c, Change::Affiliation(_, Affiliation::Owner, _))).count();
        if owners_left == 0 {
            return err(iq, Condition::Conflict, "The room must keep an owner.");
        }
        let actor = self.occupant_of(from).map(|o| o.nick.clone());
        let mut out = Out::default();
        for change in plan {
            self.apply_change(change, actor.as_deref(), &mut out);
        }
        out.send.push(iq_result(iq));
        out
    }

    fn apply_change(&mut self, change: Change, actor: Option<&str>, out: &mut Out) {
        let extra = |reason: &str| {
            let mut e = Element::new("x", NS_USER);
            if let Some(a) = actor {
                e.append_child(Element::new("actor", NS_USER).with_attr("nick", a));
            }
            if !reason.is_empty() {
                e.append_child(Element::new("reason", NS_USER).with_text(reason));
            }
            e
        };
        match change {
            Change::Role(i, Role::None, reason) => {
                // A kick (§8.2): status 307.
                let o = self.occupants.remove(i);
                self.broadcast_leave(
                    &o,
                    self.affiliation(&o.jid),
                    &[307],
                    Some(extra(&reason)),
                    out,
                );
                self.after_leave(out);
            }
            Change::Role(i, role, _) => {
                self.occupants[i].role = role;
                let o = self.occupants[i].clone();
                self.broadcast_presence(&o, &[], &[], out);
            }
            Change::Affiliation(target, aff, reason) => {
                out.changed = true;
                if aff == Affiliation::None {
                    self.affiliations.remove(&target);
                } else {
                    self.affiliations
                        .insert(target.clone(), (aff, reason.clone()));
                }
                let present: Vec<usize> = (0..self.occupants.len())
                    .rev()
                    .filter(|i| self.occupants[*i].jid.bare() == target)
                    .collect();
                for i in present {
                    if aff == Affiliation::Outcast {
                        // A ban (§9.1): status 301.
                        let o = self.occupants.remove(i);
                        self.broadcast_leave(&o, aff, &[301], Some(extra(&reason)), out);
                    } else if self.config.members_only && aff == Affiliation::None {
                        // No longer a member of a members-only room (§9.4): status 321.
                        let o = self.occupants.remove(i);
                        self.broadcast_leave(&o, aff, &[321], Some(extra(&reason)), out);
                    } else {
                        let role = self.default_role(aff);
                        self.occupants[i].role = role;
                        let o = self.occupants[i].clone();
                        self.broadcast_presence(&o, &[], &[], out);
                    }
                }
                self.after_leave(out);
            }
        }
    }
}

enum Change {
    Role(usize, Role, String),
    Affiliation(Jid, Affiliation, String),
}

/// A presence as occupants see it: without the MUC extensions the client sent.
fn strip(stanza: &Element) -> Element {
    let mut p = stanza.clone();
    p.remove_attr("to");
    p.remove_attr("from");
    p.remove_attr("id");
    p.remove_children(|c| {
        c.is("x", NS_MUC) || c.is("x", NS_USER) || c.is("occupant-id", NS_OCCUPANT_ID)
    });
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::parse_stored;

    const ROOM: &str = "tea@conference.example.com";

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn stanza(xml: &str) -> Element {
        parse_stored(xml).unwrap()
    }

    fn ids() -> impl Fn() -> (String, i64) {
        let n = std::cell::Cell::new(0);
        move || {
            n.set(n.get() + 1);
            (format!("id{}", n.get()), 1_000_000 * n.get())
        }
    }

    fn join_stanza(from: &str, nick: &str, x: &str) -> Element {
        stanza(&format!(
            "<presence xmlns='jabber:client' from='{from}' to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'>{x}</x></presence>"
        ))
    }

    fn join(room: &mut Room, from: &str, nick: &str) -> Out {
        room.presence(&jid(from), nick, &join_stanza(from, nick, ""), 100)
    }

    fn to_of(out: &Out) -> Vec<String> {
        out.send
            .iter()
            .map(|s| s.attr("to").unwrap_or_default().to_string())
            .collect()
    }

    fn codes(p: &Element) -> Vec<String> {
        p.get_child("x", NS_USER)
            .map(|x| {
                x.children()
                    .filter(|c| c.is("status", NS_USER))
                    .map(|c| c.attr("code").unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn error_condition(e: &Element) -> String {
        assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml());
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .unwrap()
            .name()
            .to_string()
    }

    fn instant(room: &mut Room, owner: &str) -> Out {
        room.iq(
            &jid(owner),
            None,
            &stanza(&format!(
                "<iq xmlns='jabber:client' type='set' id='c' from='{owner}' to='{ROOM}'><query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
            )),
        )
    }

    /// An open room created by alice, with bob and carol joined.
    fn room_of_three() -> Room {
        let mut room = Room::new(jid(ROOM), jid("alice@example.com/desk"), "salt".into());
        join(&mut room, "alice@example.com/desk", "Alice");
        instant(&mut room, "alice@example.com/desk");
        join(&mut room, "bob@example.com/phone", "Bob");
        join(&mut room, "carol@example.com/pc", "Carol");
        room
    }

    fn say(room: &mut Room, from: &str, body: &str, next: NextId<'_>) -> Out {
        room.message(
            &jid(from),
            None,
            &stanza(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'><body>{body}</body></message>"
            )),
            100,
            next,
        )
    }

    fn admin_set(room: &mut Room, from: &str, item: &str) -> Out {
        room.iq(
            &jid(from),
            None,
            &stanza(&format!(
                "<iq xmlns='jabber:client' type='set' id='a' from='{from}' to='{ROOM}'><query xmlns='{NS_ADMIN}'>{item}</query></iq>"
            )),
        )
    }

    #[test]
    fn joining_a_new_room_creates_it_locked_with_status_201_until_the_owner_submits_a_form() {
        let mut room = Room::new(jid(ROOM), jid("alice@example.com/desk"), "s".into());
        let out = join(&mut room, "alice@example.com/desk", "Alice");
        // Her presence, then the (empty) subject, which clients wait for.
        assert_eq!(out.send.len(), 2);
        assert!(out.send[1].has_child("subject", ns::CLIENT));
        let c = codes(&out.send[0]);
        assert!(
            c.contains(&"201".to_string()) && c.contains(&"110".to_string()),
            "{c:?}"
        );
        let item = out.send[0]
            .get_child("x", NS_USER)
            .unwrap()
            .get_child("item", NS_USER)
            .unwrap();
        assert_eq!(
            (item.attr("affiliation"), item.attr("role")),
            (Some("owner"), Some("moderator"))
        );
        // Locked: nobody else gets in yet.
        let refused = join(&mut room, "bob@example.com/phone", "Bob");
        assert_eq!(error_condition(&refused.send[0]), "item-not-found");
        let done = instant(&mut room, "alice@example.com/desk");
        assert!(done.changed && !room.locked);
        let ok = join(&mut room, "bob@example.com/phone", "Bob");
        assert!(ok.send.iter().all(|s| s.attr("type") != Some("error")));
    }

    #[test]
    fn a_join_sends_the_others_then_self_presence_to_all_then_the_subject() {
        let mut room = room_of_three();
        let out = join(&mut room, "dave@example.com/x", "Dave");
        let to = to_of(&out);
        // Alice, Bob and Carol's presence to Dave, Dave's to all four, the empty subject.
        assert_eq!(to.len(), 3 + 4 + 1, "{to:?}");
        assert!(to[..3].iter().all(|t| t == "dave@example.com/x"));
        let own = out
            .send
            .iter()
            .find(|p| {
                p.attr("to") == Some("dave@example.com/x")
                    && p.attr("from") == Some(&format!("{ROOM}/Dave"))
            })
            .unwrap();
        assert!(codes(own).contains(&"110".into()));
        assert!(own.get_child("occupant-id", NS_OCCUPANT_ID).is_some());
        let last = out.send.last().unwrap();
        assert!(last.has_child("subject", ns::CLIENT));
        // Semi-anonymous: the moderator alice sees Dave's real JID, bob does not.
        let to_alice = out
            .send
            .iter()
            .find(|p| p.attr("to") == Some("alice@example.com/desk"))
            .unwrap();
        let to_bob = out
            .send
            .iter()
            .find(|p| p.attr("to") == Some("bob@example.com/phone"))
            .unwrap();
        let jid_in = |p: &Element| {
            p.get_child("x", NS_USER)
                .unwrap()
                .get_child("item", NS_USER)
                .unwrap()
                .attr("jid")
                .map(str::to_string)
        };
        assert_eq!(jid_in(to_alice).as_deref(), Some("dave@example.com/x"));
        assert_eq!(jid_in(to_bob), None);
    }

    #[test]
    fn a_taken_nickname_is_a_conflict() {
        let mut room = room_of_three();
        let out = join(&mut room, "dave@example.com/x", "Bob");
        assert_eq!(error_condition(&out.send[0]), "conflict");
        // Clients match presence errors by the join's <x/>.
        assert!(out.send[0].has_child("x", NS_MUC));
    }

    #[test]
    fn a_nick_the_service_normalised_is_announced_with_status_210() {
        let mut room = room_of_three();
        // Asked with a combining accent; the JID's resource is normalised to NFC.
        let to = format!("{ROOM}/Re\u{301}my");
        let p = stanza(&format!(
            "<presence xmlns='jabber:client' from='dave@example.com/x' to='{to}'><x xmlns='{NS_MUC}'/></presence>"
        ));
        let nick = Jid::parse(&to).unwrap().resource().unwrap().to_string();
        assert_eq!(nick, "R\u{e9}my");
        let out = room.presence(&jid("dave@example.com/x"), &nick, &p, 1);
        let own = out
            .send
            .iter()
            .find(|s| {
                s.attr("to") == Some("dave@example.com/x") && codes(s).contains(&"110".into())
            })
            .unwrap();
        assert!(codes(own).contains(&"210".into()), "{:?}", codes(own));
        // A nick written as it is normalised gets no 210.
        let out = join(&mut room, "erin@example.com/x", "Erin");
        let own = out
            .send
            .iter()
            .find(|s| {
                s.attr("to") == Some("erin@example.com/x") && codes(s).contains(&"110".into())
            })
            .unwrap();
        assert!(!codes(own).contains(&"210".into()));
    }

    #[test]
    fn groupchat_messages_reach_everyone_with_occupant_and_stanza_ids_and_are_archived() {
        let mut room = room_of_three();
        let next = ids();
        let out = say(&mut room, "bob@example.com/phone", "hello", &next);
        assert_eq!(out.send.len(), 3);
        for m in &out.send {
            assert_eq!(m.attr("from"), Some(&*format!("{ROOM}/Bob")));
            assert!(m.get_child("occupant-id", NS_OCCUPANT_ID).is_some());
            assert_eq!(
                m.get_child("stanza-id", NS_SID).unwrap().attr("id"),
                Some("id1")
            );
        }
        let archived = out.archive.unwrap();
        assert_eq!(archived.nick, "Bob");
        assert_eq!(archived.sender, jid("bob@example.com"));
        // Not an occupant: not-acceptable.
        let out = say(&mut room, "eve@example.com/x", "hi", &next);
        assert_eq!(error_condition(&out.send[0]), "not-acceptable");
    }

    #[test]
    fn occupant_ids_are_stable_per_real_jid_and_differ_between_users() {
        let room = room_of_three();
        let a1 = room.occupant_id(&jid("bob@example.com/phone"));
        let a2 = room.occupant_id(&jid("bob@example.com/laptop"));
        let b = room.occupant_id(&jid("carol@example.com/pc"));
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
    }

    #[test]
    fn history_on_join_obeys_maxstanzas_maxchars_and_seconds() {
        let mut room = room_of_three();
        let next = ids();
        for i in 0..5 {
            say(&mut room, "bob@example.com/phone", &format!("m{i}"), &next);
        }
        let history = |x: &str, nick: &str, from: &str| {
            let out =
                room.clone_for_test()
                    .presence(&jid(from), nick, &join_stanza(from, nick, x), 150);
            out.send
                .iter()
                .filter(|m| m.name() == "message" && m.has_child("body", ns::CLIENT))
                .map(|m| {
                    assert!(m.has_child("delay", ns::DELAY));
                    m.child_text("body", ns::CLIENT).unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            history("", "D", "dave@example.com/x"),
            ["m0", "m1", "m2", "m3", "m4"]
        );
        assert_eq!(
            history("<history maxstanzas='2'/>", "D", "dave@example.com/x"),
            ["m3", "m4"]
        );
        assert_eq!(
            history("<history maxstanzas='0'/>", "D", "dave@example.com/x"),
            Vec::<String>::new()
        );
        assert_eq!(
            history("<history seconds='10'/>", "D", "dave@example.com/x"),
            Vec::<String>::new()
        );
        assert_eq!(
            history(
                "<history since='1970-01-01T00:00:00Z'/>",
                "D",
                "dave@example.com/x"
            )
            .len(),
            5
        );
        let one = room.history.back().unwrap().chars;
        assert_eq!(
            history(
                &format!("<history maxchars='{}'/>", one * 2 + 1),
                "D",
                "dave@example.com/x"
            )
            .len(),
            2
        );
    }

    #[test]
    fn the_subject_is_changed_by_moderators_and_sent_to_newcomers() {
        let mut room = room_of_three();
        let subject = |from: &str| {
            stanza(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'><subject>Tea</subject></message>"
            ))
        };
        let next = ids();
        let out = room.message(
            &jid("bob@example.com/phone"),
            None,
            &subject("bob@example.com/phone"),
            1,
            &next,
        );
        assert_eq!(error_condition(&out.send[0]), "forbidden");
        let out = room.message(
            &jid("alice@example.com/desk"),
            None,
            &subject("alice@example.com/desk"),
            1,
            &next,
        );
        assert!(out.changed && out.archive.is_none());
        assert_eq!(out.send.len(), 3);
        let out = join(&mut room, "dave@example.com/x", "Dave");
        assert_eq!(
            out.send
                .last()
                .unwrap()
                .child_text("subject", ns::CLIENT)
                .as_deref(),
            Some("Tea")
        );
    }

    #[test]
    fn private_messages_go_between_occupants_from_the_senders_room_jid() {
        let mut room = room_of_three();
        let next = ids();
        let pm = stanza(&format!(
            "<message xmlns='jabber:client' type='chat' from='bob@example.com/phone' to='{ROOM}/Carol'><body>psst</body></message>"
        ));
        let out = room.message(&jid("bob@example.com/phone"), Some("Carol"), &pm, 1, &next);
        assert_eq!(to_of(&out), ["carol@example.com/pc"]);
        assert_eq!(out.send[0].attr("from"), Some(&*format!("{ROOM}/Bob")));
        let out = room.message(&jid("bob@example.com/phone"), Some("Nobody"), &pm, 1, &next);
        assert_eq!(error_condition(&out.send[0]), "item-not-found");
    }

    #[test]
    fn a_kick_removes_the_occupant_with_status_307_and_only_moderators_may_kick() {
        let mut room = room_of_three();
        let out = admin_set(
            &mut room,
            "bob@example.com/phone",
            "<item nick='Carol' role='none'/>",
        );
        assert_eq!(error_condition(&out.send[0]), "forbidden");
        let out = admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item nick='Carol' role='none'><reason>rude</reason></item>",
        );
        let to_carol = out
            .send
            .iter()
            .find(|p| p.attr("to") == Some("carol@example.com/pc"))
            .unwrap();
        assert_eq!(to_carol.attr("type"), Some("unavailable"));
        assert!(codes(to_carol).contains(&"307".into()) && codes(to_carol).contains(&"110".into()));
        assert_eq!(out.send.last().unwrap().attr("type"), Some("result"));
        assert!(room.occupant_of(&jid("carol@example.com/pc")).is_none());
        // Kicked, not banned: carol may come back.
        assert!(
            join(&mut room, "carol@example.com/pc", "Carol")
                .send
                .iter()
                .all(|s| s.attr("type") != Some("error"))
        );
        // An owner cannot be kicked.
        let out = admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item nick='Alice' role='none'/>",
        );
        assert_eq!(error_condition(&out.send[0]), "not-allowed");
    }

    #[test]
    fn a_ban_removes_the_occupant_with_status_301_and_keeps_them_out() {
        let mut room = room_of_three();
        let out = admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item jid='carol@example.com' affiliation='outcast'/>",
        );
        assert!(out.changed);
        let to_bob = out
            .send
            .iter()
            .find(|p| p.attr("to") == Some("bob@example.com/phone"))
            .unwrap();
        assert!(codes(to_bob).contains(&"301".into()));
        let again = join(&mut room, "carol@example.com/laptop", "Carol2");
        assert_eq!(error_condition(&again.send[0]), "forbidden");
        // The outcast list shows carol.
        let list = room.iq(
            &jid("alice@example.com/desk"),
            None,
            &stanza(&format!("<iq xmlns='jabber:client' type='get' id='l' from='alice@example.com/desk' to='{ROOM}'><query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query></iq>")),
        );
        let q = list.send[0].get_child("query", NS_ADMIN).unwrap();
        assert_eq!(
            q.children().next().unwrap().attr("jid"),
            Some("carol@example.com")
        );
    }

    #[test]
    fn voice_is_granted_and_revoked_in_a_moderated_room() {
        let mut room = room_of_three();
        room.config.moderated = true;
        let out = join(&mut room, "dave@example.com/x", "Dave");
        let own = out
            .send
            .iter()
            .find(|p| {
                p.attr("to") == Some("dave@example.com/x")
                    && p.attr("from") == Some(&*format!("{ROOM}/Dave"))
            })
            .unwrap();
        assert_eq!(
            own.get_child("x", NS_USER)
                .unwrap()
                .get_child("item", NS_USER)
                .unwrap()
                .attr("role"),
            Some("visitor")
        );
        let next = ids();
        assert_eq!(
            error_condition(&say(&mut room, "dave@example.com/x", "hi", &next).send[0]),
            "forbidden"
        );
        admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item nick='Dave' role='participant'/>",
        );
        assert_eq!(
            say(&mut room, "dave@example.com/x", "hi", &next).send.len(),
            4
        );
        admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item nick='Dave' role='visitor'/>",
        );
        assert_eq!(
            error_condition(&say(&mut room, "dave@example.com/x", "hi", &next).send[0]),
            "forbidden"
        );
    }

    #[test]
    fn members_only_rooms_admit_members_and_admins_manage_the_lists() {
        let mut room = room_of_three();
        room.config.members_only = true;
        assert_eq!(
            error_condition(&join(&mut room, "dave@example.com/x", "Dave").send[0]),
            "registration-required"
        );
        // Bob, no admin, may not grant membership; alice may.
        let out = admin_set(
            &mut room,
            "bob@example.com/phone",
            "<item jid='dave@example.com' affiliation='member'/>",
        );
        assert_eq!(error_condition(&out.send[0]), "forbidden");
        admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item jid='dave@example.com' affiliation='member'/>",
        );
        assert!(
            join(&mut room, "dave@example.com/x", "Dave")
                .send
                .iter()
                .all(|s| s.attr("type") != Some("error"))
        );
        // Making bob an admin makes him a moderator; the last owner cannot step down.
        admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item jid='bob@example.com' affiliation='admin'/>",
        );
        assert_eq!(
            room.occupant_of(&jid("bob@example.com/phone"))
                .unwrap()
                .role,
            Role::Moderator
        );
        let out = admin_set(
            &mut room,
            "alice@example.com/desk",
            "<item jid='alice@example.com' affiliation='member'/>",
        );
        assert_eq!(error_condition(&out.send[0]), "conflict");
        // An admin may not touch an owner.
        let out = admin_set(
            &mut room,
            "bob@example.com/phone",
            "<item jid='alice@example.com' affiliation='outcast'/>",
        );
        assert_eq!(error_condition(&out.send[0]), "forbidden");
    }

    #[test]
    fn the_owner_configures_the_room_and_disco_shows_its_features() {
        let mut room = room_of_three();
        let form = format!(
            "<iq xmlns='jabber:client' type='set' id='c' from='alice@example.com/desk' to='{ROOM}'><query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>{NS_ROOMCONFIG}</value></field>\
             <field var='muc#roomconfig_roomname'><value>Tea</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
             <field var='muc#roomconfig_membersonly'><value>1</value></field>\
             <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
             <field var='muc#roomconfig_roomsecret'><value>s3cret</value></field>\
             <field var='muc#roomconfig_whois'><value>anyone</value></field>\
             <field var='muc#roomconfig_maxusers'><value>10</value></field>\
             <field var='muc#roomconfig_historylength'><value>5</value></field>\
             </x></query></iq>"
        );
        let out = room.iq(&jid("alice@example.com/desk"), None, &stanza(&form));
        assert!(out.changed);
        // Everyone hears that the room became non-anonymous (172).
        assert!(
            out.send
                .iter()
                .any(|m| m.name() == "message" && codes(m) == ["172"])
        );
        assert_eq!(room.config.password.as_deref(), Some("s3cret"));
        assert_eq!(
            (room.config.max_users, room.config.history_length),
            (Some(10), 5)
        );
        let info = room.disco_info();
        let features: Vec<_> = info.children().filter_map(|f| f.attr("var")).collect();
        for f in [
            "muc_persistent",
            "muc_membersonly",
            "muc_passwordprotected",
            "muc_nonanonymous",
            NS_OCCUPANT_ID,
        ] {
            assert!(features.contains(&f), "{f} in {features:?}");
        }
        // Only owners may read or change the form.
        let get = stanza(&format!(
            "<iq xmlns='jabber:client' type='get' id='g' from='bob@example.com/phone' to='{ROOM}'><query xmlns='{NS_OWNER}'/></iq>"
        ));
        assert_eq!(
            error_condition(&room.iq(&jid("bob@example.com/phone"), None, &get).send[0]),
            "forbidden"
        );
        // A wrong password keeps a member out.
        room.affiliations.insert(
            jid("dave@example.com"),
            (Affiliation::Member, String::new()),
        );
        assert_eq!(
            error_condition(&join(&mut room, "dave@example.com/x", "Dave").send[0]),
            "not-authorized"
        );
        let ok = room.presence(
            &jid("dave@example.com/x"),
            "Dave",
            &join_stanza("dave@example.com/x", "Dave", "<password>s3cret</password>"),
            1,
        );
        assert!(ok.send.iter().all(|s| s.attr("type") != Some("error")));
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_admits_admins() {
        let mut room = room_of_three();
        room.max_users_limit = Some(3);
        assert_eq!(
            error_condition(&join(&mut room, "dave@example.com/x", "Dave").send[0]),
            "service-unavailable"
        );
        room.affiliations
            .insert(jid("dave@example.com"), (Affiliation::Admin, String::new()));
        assert!(
            join(&mut room, "dave@example.com/x", "Dave")
                .send
                .iter()
                .all(|s| s.attr("type") != Some("error"))
        );
    }

    #[test]
    fn a_nick_change_sends_303_then_the_new_presence() {
        let mut room = room_of_three();
        let out = room.presence(
            &jid("bob@example.com/phone"),
            "Robert",
            &join_stanza("bob@example.com/phone", "Robert", ""),
            1,
        );
        assert_eq!(out.send.len(), 6);
        assert!(codes(&out.send[0]).contains(&"303".into()));
        assert_eq!(
            out.send[0]
                .get_child("x", NS_USER)
                .unwrap()
                .get_child("item", NS_USER)
                .unwrap()
                .attr("nick"),
            Some("Robert")
        );
        assert_eq!(out.send[3].attr("from"), Some(&*format!("{ROOM}/Robert")));
        assert_eq!(
            error_condition(
                &room
                    .presence(
                        &jid("bob@example.com/phone"),
                        "Carol",
                        &join_stanza("bob@example.com/phone", "Carol", ""),
                        1
                    )
                    .send[0]
            ),
            "conflict"
        );
    }

    #[test]
    fn leaving_broadcasts_unavailable_and_a_temporary_room_ends_with_its_last_occupant() {
        let mut room = room_of_three();
        let out = room.gone(&jid("bob@example.com/phone"));
        assert_eq!(out.send.len(), 3);
        assert!(
            out.send
                .iter()
                .all(|p| p.attr("type") == Some("unavailable"))
        );
        assert!(!out.destroyed);
        room.gone(&jid("carol@example.com/pc"));
        let leave = stanza(&format!(
            "<presence xmlns='jabber:client' type='unavailable' from='alice@example.com/desk' to='{ROOM}/Alice'/>"
        ));
        let out = room.presence(&jid("alice@example.com/desk"), "Alice", &leave, 1);
        assert!(out.destroyed);
        // A persistent room stays.
        let mut room = room_of_three();
        room.config.persistent = true;
        for j in [
            "alice@example.com/desk",
            "bob@example.com/phone",
            "carol@example.com/pc",
        ] {
            assert!(!room.gone(&jid(j)).destroyed);
        }
    }

    #[test]
    fn a_self_ping_answers_while_joined_and_is_not_acceptable_otherwise() {
        let mut room = room_of_three();
        let ping = |from: &str, nick: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' type='get' id='p' from='{from}' to='{ROOM}/{nick}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ))
        };
        let out = room.iq(
            &jid("bob@example.com/phone"),
            Some("Bob"),
            &ping("bob@example.com/phone", "Bob"),
        );
        assert_eq!(out.send[0].attr("type"), Some("result"));
        room.gone(&jid("bob@example.com/phone"));
        let out = room.iq(
            &jid("bob@example.com/phone"),
            Some("Bob"),
            &ping("bob@example.com/phone", "Bob"),
        );
        assert_eq!(error_condition(&out.send[0]), "not-acceptable");
    }

    #[test]
    fn a_mediated_invitation_goes_to_the_invitee_from_the_room() {
        let mut room = room_of_three();
        let invite = stanza(&format!(
            "<message xmlns='jabber:client' from='alice@example.com/desk' to='{ROOM}'><x xmlns='{NS_USER}'><invite to='dave@example.com'><reason>Join us</reason></invite></x></message>"
        ));
        let next = ids();
        let out = room.message(&jid("alice@example.com/desk"), None, &invite, 1, &next);
        assert_eq!(to_of(&out), ["dave@example.com"]);
        let inv = out.send[0]
            .get_child("x", NS_USER)
            .unwrap()
            .get_child("invite", NS_USER)
            .unwrap();
        assert_eq!(inv.attr("from"), Some("alice@example.com"));
        assert_eq!(
            inv.child_text("reason", NS_USER).as_deref(),
            Some("Join us")
        );
        // Bob, a plain participant, may not invite while allowinvites is off.
        let out = room.message(&jid("bob@example.com/phone"), None, &invite, 1, &next);
        assert_eq!(error_condition(&out.send[0]), "forbidden");
    }

    #[test]
    fn destroying_the_room_sends_everyone_away() {
        let mut room = room_of_three();
        let destroy = stanza(&format!(
            "<iq xmlns='jabber:client' type='set' id='d' from='alice@example.com/desk' to='{ROOM}'><query xmlns='{NS_OWNER}'><destroy><reason>bye</reason></destroy></query></iq>"
        ));
        let out = room.iq(&jid("alice@example.com/desk"), None, &destroy);
        assert!(out.destroyed);
        assert_eq!(
            out.send.iter().filter(|p| p.name() == "presence").count(),
            3
        );
        assert!(room.is_empty());
    }

    /// What one groupchat message costs the room to fan out (run with `--release --ignored`).
    #[test]
    #[ignore]
    fn fan_out_cost() {
        let mut room = Room::new(jid(ROOM), jid("u0@example.com/r"), "salt".into());
        join(&mut room, "u0@example.com/r", "u0");
        instant(&mut room, "u0@example.com/r");
        for i in 1..100 {
            join(&mut room, &format!("u{i}@example.com/r"), &format!("u{i}"));
        }
        let next = ids();
        let message = stanza(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='u1@example.com/r' to='{ROOM}'><body>Hello, everyone in the room!</body></message>"
        ));
        let from = jid("u1@example.com/r");
        let n = 20_000;
        let started = std::time::Instant::now();
        let mut sent = 0;
        for _ in 0..n {
            sent += room.message(&from, None, &message, 100, &next).send.len();
        }
        let per = started.elapsed() / n;
        println!(
            "100 occupants: {per:?} per message, {:?} per copy ({sent} copies)",
            per / 100
        );
    }

    impl Room {
        fn clone_for_test(&self) -> Room {
            Room {
                jid: self.jid.clone(),
                config: self.config.clone(),
                affiliations: self.affiliations.clone(),
                occupants: self.occupants.clone(),
                subject: self.subject.clone(),
                locked: self.locked,
                max_users_limit: self.max_users_limit,
                archiving: self.archiving,
                salt: self.salt.clone(),
                history: self.history.clone(),
            }
        }
    }
}
