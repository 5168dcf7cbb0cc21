//! Rosters and presence subscriptions (RFC 6121 §2, §3 and Appendix A), roster versioning
//! (XEP-0237) and subscription pre-approval (RFC 6121 §3.4), without I/O.
//!
//! The server keeps one [`Contact`] per (user, contact) pair: the roster item the user sees
//! (name, groups, `subscription`, `ask`, `approved`) plus what only the server knows (a
//! pending inbound request, which RFC 6121 §3.1.3 says must not create a roster item).
//!
//! A subscription stanza moves that state twice when both users are local:
//!
//! ```text
//!  alice sends <presence to='bob' type='subscribe'/>
//!    │
//!    ├─ alice's server: outbound(alice's contact "bob", Subscribe)    (Appendix A.2)
//!    │     → new state, roster push to alice's interested resources, route?
//!    │
//!    └─ bob's server:   inbound(bob's contact "alice", Subscribe)     (Appendix A.3)
//!          → new state, push to bob, deliver to bob's available resources?,
//!            answer alice on bob's behalf (pre-approved, already subscribed)?,
//!            send bob's presence (or unavailable) to alice?
//! ```
//!
//! Each step is [`Contact::apply`] returning the new contact (or `None`: forget it) and a
//! [`Transition`] saying what to do; the caller stores the one and carries out the other.

use std::fmt;

use super::{element::Element, jid::Jid, ns, stanza::Condition};

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Subscription {
    /// Neither is subscribed to the other's presence.
    #[default]
    None,
    /// The user is subscribed to the contact's presence.
    To,
    /// The contact is subscribed to the user's presence.
    From,
    /// Both ways.
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
}

/// The four presence types that manage subscriptions (RFC 6121 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// "I would like to see your presence."
    Subscribe,
    /// "You may see my presence" (an approval, or a pre-approval).
    Subscribed,
    /// "I no longer want to see your presence."
    Unsubscribe,
    /// "You may no longer see my presence" (a denial, or a cancellation).
    Unsubscribed,
}

impl SubscriptionKind {
    /// The kind for a presence `type`, if it is one of the four.
    pub fn from_presence_type(t: &str) -> Option<Self> {
        Some(match t {
            "subscribe" => SubscriptionKind::Subscribe,
            "subscribed" => SubscriptionKind::Subscribed,
            "unsubscribe" => SubscriptionKind::Unsubscribe,
            "unsubscribed" => SubscriptionKind::Unsubscribed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Subscribe => "subscribe",
            SubscriptionKind::Subscribed => "subscribed",
            SubscriptionKind::Unsubscribe => "unsubscribe",
            SubscriptionKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// The subscription state of one contact as the user's server keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct State {
    pub subscription: Subscription,
    /// The user asked to subscribe and the contact has not answered (`ask='subscribe'`).
    pub pending_out: bool,
    /// The contact asked to subscribe and the user has not answered.
    pub pending_in: bool,
    /// The user approved a subscription the contact has not asked for yet (`approved='true'`).
    pub approved: bool,
}

/// The nine defined states of RFC 6121 Appendix A.1, which the tables are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defined {
    None,
    NonePendingOut,
    NonePendingIn,
    NonePendingOutIn,
    To,
    ToPendingIn,
    From,
    FromPendingOut,
    Both,
}

impl State {
    /// A state with this subscription and these pending flags (not pre-approved).
    pub fn new(subscription: Subscription, pending_out: bool, pending_in: bool) -> Self {
        Self {
            subscription,
            pending_out,
            pending_in,
            approved: false,
        }
    }

    /// The defined state; impossible combinations (a pending request for a subscription
    /// that already exists) count as the subscription alone.
    fn defined(self) -> Defined {
        use Subscription as S;
        match (self.subscription, self.pending_out, self.pending_in) {
            (S::None, false, false) => Defined::None,
            (S::None, true, false) => Defined::NonePendingOut,
            (S::None, false, true) => Defined::NonePendingIn,
            (S::None, true, true) => Defined::NonePendingOutIn,
            (S::To, _, false) => Defined::To,
            (S::To, _, true) => Defined::ToPendingIn,
            (S::From, false, _) => Defined::From,
            (S::From, true, _) => Defined::FromPendingOut,
            (S::Both, _, _) => Defined::Both,
        }
    }

    fn with_defined(self, d: Defined) -> Self {
        let (subscription, pending_out, pending_in) = match d {
            Defined::None => (Subscription::None, false, false),
            Defined::NonePendingOut => (Subscription::None, true, false),
            Defined::NonePendingIn => (Subscription::None, false, true),
            Defined::NonePendingOutIn => (Subscription::None, true, true),
            Defined::To => (Subscription::To, false, false),
            Defined::ToPendingIn => (Subscription::To, false, true),
            Defined::From => (Subscription::From, false, false),
            Defined::FromPendingOut => (Subscription::From, true, false),
            Defined::Both => (Subscription::Both, false, false),
        };
        Self {
            subscription,
            pending_out,
            pending_in,
            // Pre-approval only means something while the contact is not subscribed.
            approved: self.approved && !subscription.has_from(),
        }
    }

    /// Whether a pre-approval can be recorded or is in force: the contact is neither
    /// subscribed nor asking (RFC 6121 §3.4: "None", "None + Pending Out" or "To").
    fn may_pre_approve(self) -> bool {
        matches!(
            self.defined(),
            Defined::None | Defined::NonePendingOut | Defined::To
        )
    }

    /// What a roster item shows of the state (the pending-in flag is not shown).
    fn shown(self) -> (Subscription, bool, bool) {
        (self.subscription, self.pending_out, self.approved)
    }
}

/// Presence the server sends to the contact on the user's behalf after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceNotice {
    /// The contact may now see the user: the current presence of each available resource
    /// (RFC 6121 §3.1.5).
    Available,
    /// The contact may no longer see the user: unavailable from each available resource,
    /// sent before the cancellation itself (RFC 6121 §3.2.2, §3.3.3).
    Unavailable,
}

/// What to do after a subscription stanza changed (or did not change) a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Outbound: route the stanza to the contact. Inbound: deliver it to the user's
    /// available resources.
    pub forward: bool,
    /// Send a roster push with the contact's item to the user's interested resources.
    pub push: bool,
    /// Inbound only: answer the sender on the user's behalf, without involving the user.
    pub auto_reply: Option<SubscriptionKind>,
    /// Presence to send to the contact on the user's behalf.
    pub notice: Option<PresenceNotice>,
    /// A subscription request became pending: keep it to deliver at each login.
    pub keep_request: bool,
}

/// Which server is processing the stanza: the sender's (outbound) or the recipient's
/// (inbound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// RFC 6121 Appendix A.2: the user sent `kind` to the contact. Returns the new state and
/// whether the stanza is routed.
fn outbound(state: State, kind: SubscriptionKind) -> (State, bool) {
    use Defined::*;
    use SubscriptionKind as K;
    let old = state.defined();
    match kind {
        // A.2.1: always routed, so that a contact whose state drifted can answer again.
        K::Subscribe => {
            let new = match old {
                None => NonePendingOut,
                NonePendingIn => NonePendingOutIn,
                From => FromPendingOut,
                same => same,
            };
            (state.with_defined(new), true)
        }
        // A.2.2; with no request to answer, a pre-approval (§3.4.1), never routed.
        K::Subscribed => match old {
            NonePendingIn => (state.with_defined(From), true),
            NonePendingOutIn => (state.with_defined(FromPendingOut), true),
            ToPendingIn => (state.with_defined(Both), true),
            None | NonePendingOut | To => (
                State {
                    approved: true,
                    ..state
                },
                false,
            ),
            From | FromPendingOut | Both => (state, false),
        },
        // A.2.3: always routed.
        K::Unsubscribe => {
            let new = match old {
                NonePendingOut | To => None,
                NonePendingOutIn | ToPendingIn => NonePendingIn,
                FromPendingOut | Both => From,
                same => same,
            };
            (state.with_defined(new), true)
        }
        // A.2.4; it also withdraws a pre-approval, and then is not routed (§3.2.2).
        K::Unsubscribed => match old {
            NonePendingIn | From => (state.with_defined(None), true),
            NonePendingOutIn | FromPendingOut => (state.with_defined(NonePendingOut), true),
            ToPendingIn | Both => (state.with_defined(To), true),
            None | NonePendingOut | To => (
                State {
                    approved: false,
                    ..state
                },
                false,
            ),
        },
    }
}

/// RFC 6121 Appendix A.3: the contact sent `kind` to the user. Returns the new state,
/// whether the stanza is delivered to the user, and the server's own answer if any.
fn inbound(state: State, kind: SubscriptionKind) -> (State, bool, Option<SubscriptionKind>) {
    use Defined::*;
    use SubscriptionKind as K;
    let old = state.defined();
    match kind {
        // A.3.1; a pre-approved or already granted request is answered by the server
        // (§3.1.3, §3.4.2) and never bothers the user.
        K::Subscribe => {
            if state.approved && state.may_pre_approve() {
                let new = match old {
                    NonePendingOut => FromPendingOut,
                    To => Both,
                    _ => From,
                };
                return (state.with_defined(new), false, Some(K::Subscribed));
            }
            match old {
                None => (state.with_defined(NonePendingIn), true, Option::None),
                NonePendingOut => (state.with_defined(NonePendingOutIn), true, Option::None),
                To => (state.with_defined(ToPendingIn), true, Option::None),
                NonePendingIn | NonePendingOutIn | ToPendingIn => (state, false, Option::None),
                From | FromPendingOut | Both => (state, false, Some(K::Subscribed)),
            }
        }
        // A.3.2: only an answer to a request the user made counts.
        K::Subscribed => match old {
            NonePendingOut => (state.with_defined(To), true, Option::None),
            NonePendingOutIn => (state.with_defined(ToPendingIn), true, Option::None),
            FromPendingOut => (state.with_defined(Both), true, Option::None),
            _ => (state, false, Option::None),
        },
        // A.3.3: the contact withdraws its request or its subscription.
        K::Unsubscribe => match old {
            NonePendingIn | From => (state.with_defined(None), true, Option::None),
            NonePendingOutIn | FromPendingOut => {
                (state.with_defined(NonePendingOut), true, Option::None)
            }
            ToPendingIn | Both => (state.with_defined(To), true, Option::None),
            None | NonePendingOut | To => (state, false, Option::None),
        },
        // A.3.4: the contact denies the user's request or cancels the user's subscription.
        K::Unsubscribed => match old {
            NonePendingOut | To => (state.with_defined(None), true, Option::None),
            NonePendingOutIn | ToPendingIn => {
                (state.with_defined(NonePendingIn), true, Option::None)
            }
            FromPendingOut | Both => (state.with_defined(From), true, Option::None),
            None | NonePendingIn | From => (state, false, Option::None),
        },
    }
}

/// Everything the user's server keeps about one contact of the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The contact's bare JID.
    pub jid: Jid,
    /// Whether the contact is on the user's roster. A contact that only sent a request is
    /// not, until the user acts on it (RFC 6121 §3.1.3).
    pub listed: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub state: State,
    /// The pending subscription request as it arrived (with its status or nickname), to
    /// deliver again at each login until the user answers (RFC 6121 §3.1.3).
    pub request: Option<String>,
}

impl Contact {
    /// A contact the server knows nothing about yet.
    pub fn new(jid: Jid) -> Self {
        Self {
            jid,
            listed: false,
            name: None,
            groups: Vec::new(),
            state: State::default(),
            request: None,
        }
    }

    /// Applies a subscription stanza to the contact (`None`: not known yet). Returns what
    /// remains to store (`None`: forget the contact) and what to do.
    pub fn apply(
        contact: Option<Contact>,
        jid: &Jid,
        direction: Direction,
        kind: SubscriptionKind,
    ) -> (Option<Contact>, Transition) {
        let mut c = contact.unwrap_or_else(|| Contact::new(jid.bare()));
        let old = c.state;
        let was_listed = c.listed;
        let (new, forward, auto_reply) = match direction {
            Direction::Outbound => {
                let (s, route) = outbound(old, kind);
                (s, route, None)
            }
            Direction::Inbound => inbound(old, kind),
        };
        c.state = new;
        // Anything but a bare inbound request makes the contact a roster item (RFC 6121
        // §3.1.2, §3.1.5, §3.4.1).
        c.listed |= new.subscription != Subscription::None || new.pending_out || new.approved;
        let keep_request = new.pending_in && !old.pending_in;
        if !new.pending_in {
            c.request = None;
        }
        let from_changed = old.subscription.has_from() != new.subscription.has_from();
        let notice = if from_changed && new.subscription.has_from() {
            Some(PresenceNotice::Available)
        } else if from_changed {
            Some(PresenceNotice::Unavailable)
        } else if auto_reply == Some(SubscriptionKind::Subscribed) {
            // The contact may have lost track; it gets what it is entitled to see.
            Some(PresenceNotice::Available)
        } else {
            None
        };
        let transition = Transition {
            forward,
            push: c.listed && (!was_listed || old.shown() != new.shown()),
            auto_reply,
            notice,
            keep_request,
        };
        let keep = c.listed || c.state.pending_in;
        (keep.then_some(c), transition)
    }

    /// [`Contact::apply`] for storing: also keeps `request` (the stanza as it arrived) when
    /// a request becomes pending, and says [`Edit::Keep`] when nothing changed.
    pub fn change(
        stored: Option<Contact>,
        jid: &Jid,
        direction: Direction,
        kind: SubscriptionKind,
        request: Option<String>,
    ) -> (Edit, Transition, Option<Contact>) {
        let (mut after, transition) = Contact::apply(stored.clone(), jid, direction, kind);
        if transition.keep_request
            && let Some(c) = after.as_mut()
        {
            c.request = request;
        }
        let edit = if after == stored {
            Edit::Keep
        } else {
            Edit::from_applied(after.clone())
        };
        (edit, transition, after)
    }

    /// What removing the contact from the roster tells the contact (RFC 6121 §2.5.2): it
    /// loses its subscription (and its request is denied), and the user's subscription
    /// (or request) is cancelled.
    pub fn removal_notices(&self) -> Vec<SubscriptionKind> {
        let s = self.state;
        let mut out = Vec::new();
        if s.subscription.has_to() || s.pending_out {
            out.push(SubscriptionKind::Unsubscribe);
        }
        if s.subscription.has_from() || s.pending_in {
            out.push(SubscriptionKind::Unsubscribed);
        }
        out
    }

    /// The `<item/>` of a roster result or push.
    pub fn item(&self) -> Element {
        let mut item = Element::new("item", ns::ROSTER)
            .with_attr("jid", self.jid.to_string())
            .with_opt_attr("name", self.name.as_deref())
            .with_attr("subscription", self.state.subscription.as_str());
        if self.state.pending_out {
            item.set_attr("ask", "subscribe");
        }
        if self.state.approved {
            item.set_attr("approved", "true");
        }
        for g in &self.groups {
            item.append_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
        }
        item
    }
}

/// What a change does to the stored contact (see `Store::update_contact`).
#[derive(Debug)]
pub enum Edit {
    /// Nothing: the change is abandoned and the roster version stays.
    Keep,
    /// Store the contact as it now is.
    Save(Contact),
    /// Forget the contact.
    Delete,
}

impl Edit {
    /// Storing what [`Contact::apply`] left: the contact, or forgetting it.
    pub fn from_applied(contact: Option<Contact>) -> Self {
        contact.map_or(Edit::Delete, Edit::Save)
    }
}

/// The `<item subscription='remove'/>` of a push announcing a removal.
pub fn removed_item(jid: &Jid) -> Element {
    Element::new("item", ns::ROSTER)
        .with_attr("jid", jid.to_string())
        .with_attr("subscription", "remove")
}

/// A roster version (XEP-0237): an opaque string to the client. The epoch is chosen when
/// the account's roster first changes, so a cache from an account deleted and created
/// again under the same name never looks current.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RosterVersion {
    pub epoch: String,
    pub counter: i64,
}

impl fmt::Display for RosterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch.is_empty() {
            write!(f, "{}", self.counter)
        } else {
            write!(f, "{}-{}", self.epoch, self.counter)
        }
    }
}

impl RosterVersion {
    /// Whether a client that cached the roster at `cached` is up to date. An empty `ver`
    /// means "no cache" (XEP-0237 §4).
    pub fn is_current(&self, cached: &str) -> bool {
        !cached.is_empty() && cached == self.to_string()
    }
}

/// The longest name or group name the server keeps, in bytes.
pub const MAX_TEXT_BYTES: usize = 1023;
/// The most groups one item may be in.
pub const MAX_GROUPS: usize = 64;

/// A roster set, checked (RFC 6121 §2.3.3, §2.5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterSet {
    /// Add the item or change its name and groups; the subscription state is the server's.
    Update {
        jid: Jid,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove {
        jid: Jid,
    },
}

/// Reads the `<query/>` of a roster set; the error is the condition to answer with.
pub fn parse_set(query: &Element) -> Result<RosterSet, (Condition, &'static str)> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err((
            Condition::BadRequest,
            "A roster set carries exactly one item.",
        ));
    };
    let jid = item
        .attr("jid")
        .ok_or((Condition::BadRequest, "The item has no JID."))?;
    let jid = Jid::parse(jid)
        .map_err(|_| (Condition::JidMalformed, "The item's JID is not valid."))?
        // Subscriptions are between accounts: the roster holds bare JIDs.
        .bare();
    // 'ask', 'approved' and any other 'subscription' value are the server's to set and
    // are ignored (RFC 6121 §2.1.2).
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterSet::Remove { jid });
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT_BYTES) {
        return Err((Condition::NotAcceptable, "The name is too long."));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let name = g.text();
        if name.is_empty() {
            return Err((Condition::NotAcceptable, "A group name is empty."));
        }
        if name.len() > MAX_TEXT_BYTES {
            return Err((Condition::NotAcceptable, "A group name is too long."));
        }
        if groups.contains(&name) {
            return Err((Condition::BadRequest, "A group is named twice."));
        }
        groups.push(name);
    }
    if groups.len() > MAX_GROUPS {
        return Err((Condition::NotAcceptable, "The item is in too many groups."));
    }
    Ok(RosterSet::Update { jid, name, groups })
}

/// The answer to a roster get (XEP-0237 §4): an empty result when the client's cache is
/// current, else the whole roster with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterAnswer {
    Unchanged,
    Full(Element),
}

/// Answers a roster get carrying `cached` (its `ver`, if any) with the listed contacts.
pub fn answer_get(
    cached: Option<&str>,
    version: &RosterVersion,
    contacts: &[Contact],
) -> RosterAnswer {
    if cached.is_some_and(|c| version.is_current(c)) {
        return RosterAnswer::Unchanged;
    }
    let mut query = Element::new("query", ns::ROSTER);
    // Versioning is offered only to clients that use it (XEP-0237 §3).
    if cached.is_some() {
        query.set_attr("ver", version.to_string());
    }
    for c in contacts.iter().filter(|c| c.listed) {
        query.append_child(c.item());
    }
    RosterAnswer::Full(query)
}

/// A roster push (RFC 6121 §2.1.6) of `item` to one interested resource.
pub fn push(to: &Jid, id: &str, version: &RosterVersion, item: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", to.to_string())
        .with_child(
            Element::new("query", ns::ROSTER)
                .with_attr("ver", version.to_string())
                .with_child(item),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};
    use Subscription as S;
    use SubscriptionKind::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn listed(state: State) -> Contact {
        Contact {
            listed: true,
            state,
            ..Contact::new(jid("contact@example.org"))
        }
    }

    fn st(sub: S, out: bool, inn: bool) -> State {
        State::new(sub, out, inn)
    }

    /// The nine defined states of Appendix A.1, in the order of the RFC's tables.
    fn nine() -> [State; 9] {
        [
            st(S::None, false, false),
            st(S::None, true, false),
            st(S::None, false, true),
            st(S::None, true, true),
            st(S::To, false, false),
            st(S::To, false, true),
            st(S::From, false, false),
            st(S::From, true, false),
            st(S::Both, false, false),
        ]
    }

    /// Checks one of the RFC's tables row by row: (forwarded?, new state) per state.
    fn check_table(direction: Direction, kind: SubscriptionKind, rows: [(bool, State); 9]) {
        for (old, (forward, new)) in nine().into_iter().zip(rows) {
            let (after, t) = Contact::apply(
                Some(listed(old)),
                &jid("contact@example.org"),
                direction,
                kind,
            );
            let after = after.expect("a listed contact stays");
            assert_eq!(
                (t.forward, after.state),
                (forward, new),
                "{direction:?} {kind:?} from {old:?}"
            );
        }
    }

    #[test]
    fn an_outbound_subscribe_is_always_routed_and_marks_the_request_pending_out() {
        check_table(
            Outbound,
            Subscribe,
            [
                (true, st(S::None, true, false)),
                (true, st(S::None, true, false)),
                (true, st(S::None, true, true)),
                (true, st(S::None, true, true)),
                (true, st(S::To, false, false)),
                (true, st(S::To, false, true)),
                (true, st(S::From, true, false)),
                (true, st(S::From, true, false)),
                (true, st(S::Both, false, false)),
            ],
        );
    }

    #[test]
    fn an_outbound_subscribed_approves_only_a_pending_request() {
        let mut rows = [
            (false, st(S::None, false, false)),
            (false, st(S::None, true, false)),
            (true, st(S::From, false, false)),
            (true, st(S::From, true, false)),
            (false, st(S::To, false, false)),
            (true, st(S::Both, false, false)),
            (false, st(S::From, false, false)),
            (false, st(S::From, true, false)),
            (false, st(S::Both, false, false)),
        ];
        // Where there is no request, the approval is kept for later (§3.4).
        for i in [0, 1, 4] {
            rows[i].1.approved = true;
        }
        check_table(Outbound, Subscribed, rows);
    }

    #[test]
    fn an_outbound_unsubscribe_is_always_routed_and_drops_the_users_subscription() {
        check_table(
            Outbound,
            Unsubscribe,
            [
                (true, st(S::None, false, false)),
                (true, st(S::None, false, false)),
                (true, st(S::None, false, true)),
                (true, st(S::None, false, true)),
                (true, st(S::None, false, false)),
                (true, st(S::None, false, true)),
                (true, st(S::From, false, false)),
                (true, st(S::From, false, false)),
                (true, st(S::From, false, false)),
            ],
        );
    }

    #[test]
    fn an_outbound_unsubscribed_is_routed_only_when_it_denies_or_cancels_something() {
        check_table(
            Outbound,
            Unsubscribed,
            [
                (false, st(S::None, false, false)),
                (false, st(S::None, true, false)),
                (true, st(S::None, false, false)),
                (true, st(S::None, true, false)),
                (false, st(S::To, false, false)),
                (true, st(S::To, false, false)),
                (true, st(S::None, false, false)),
                (true, st(S::None, true, false)),
                (true, st(S::To, false, false)),
            ],
        );
    }

    #[test]
    fn an_inbound_subscribe_is_delivered_only_when_it_is_news() {
        check_table(
            Inbound,
            Subscribe,
            [
                (true, st(S::None, false, true)),
                (true, st(S::None, true, true)),
                (false, st(S::None, false, true)),
                (false, st(S::None, true, true)),
                (true, st(S::To, false, true)),
                (false, st(S::To, false, true)),
                (false, st(S::From, false, false)),
                (false, st(S::From, true, false)),
                (false, st(S::Both, false, false)),
            ],
        );
    }

    #[test]
    fn an_inbound_subscribe_from_an_existing_subscriber_is_answered_by_the_server() {
        for old in [
            st(S::From, false, false),
            st(S::From, true, false),
            st(S::Both, false, false),
        ] {
            let (_, t) = Contact::apply(Some(listed(old)), &jid("c@x.example"), Inbound, Subscribe);
            assert_eq!(t.auto_reply, Some(Subscribed), "{old:?}");
            assert_eq!(t.notice, Some(PresenceNotice::Available), "{old:?}");
            assert!(!t.push);
        }
        let (_, t) = Contact::apply(
            Some(listed(st(S::None, false, false))),
            &jid("c@x.example"),
            Inbound,
            Subscribe,
        );
        assert_eq!(t.auto_reply, None);
    }

    #[test]
    fn an_inbound_subscribed_counts_only_as_an_answer_to_the_users_request() {
        check_table(
            Inbound,
            Subscribed,
            [
                (false, st(S::None, false, false)),
                (true, st(S::To, false, false)),
                (false, st(S::None, false, true)),
                (true, st(S::To, false, true)),
                (false, st(S::To, false, false)),
                (false, st(S::To, false, true)),
                (false, st(S::From, false, false)),
                (true, st(S::Both, false, false)),
                (false, st(S::Both, false, false)),
            ],
        );
    }

    #[test]
    fn an_inbound_unsubscribe_withdraws_the_contacts_request_or_subscription() {
        check_table(
            Inbound,
            Unsubscribe,
            [
                (false, st(S::None, false, false)),
                (false, st(S::None, true, false)),
                (true, st(S::None, false, false)),
                (true, st(S::None, true, false)),
                (false, st(S::To, false, false)),
                (true, st(S::To, false, false)),
                (true, st(S::None, false, false)),
                (true, st(S::None, true, false)),
                (true, st(S::To, false, false)),
            ],
        );
    }

    #[test]
    fn an_inbound_unsubscribed_denies_the_users_request_or_cancels_the_users_subscription() {
        check_table(
            Inbound,
            Unsubscribed,
            [
                (false, st(S::None, false, false)),
                (true, st(S::None, false, false)),
                (false, st(S::None, false, true)),
                (true, st(S::None, false, true)),
                (true, st(S::None, false, false)),
                (true, st(S::None, false, true)),
                (false, st(S::From, false, false)),
                (true, st(S::From, false, false)),
                (true, st(S::From, false, false)),
            ],
        );
    }

    #[test]
    fn a_request_from_a_stranger_is_kept_but_does_not_create_a_roster_item() {
        let bob = jid("bob@example.net");
        let (c, t) = Contact::apply(None, &bob, Inbound, Subscribe);
        let c = c.expect("the request is remembered");
        assert!(!c.listed);
        assert!(c.state.pending_in);
        assert!(t.forward && t.keep_request && !t.push);
        // The user denies it: nothing is left.
        let (c, t) = Contact::apply(Some(c), &bob, Outbound, Unsubscribed);
        assert_eq!(c, None);
        assert!(t.forward && !t.push);
    }

    #[test]
    fn approving_a_request_from_a_stranger_adds_the_contact_with_subscription_from() {
        let bob = jid("bob@example.net");
        let (c, _) = Contact::apply(None, &bob, Inbound, Subscribe);
        let (c, t) = Contact::apply(c, &bob, Outbound, Subscribed);
        let c = c.unwrap();
        assert!(c.listed);
        assert_eq!(c.state, st(S::From, false, false));
        assert_eq!(c.request, None);
        assert!(t.forward && t.push);
        assert_eq!(t.notice, Some(PresenceNotice::Available));
    }

    #[test]
    fn subscribing_to_a_stranger_adds_the_contact_with_ask_subscribe() {
        let (c, t) = Contact::apply(None, &jid("bob@example.net/phone"), Outbound, Subscribe);
        let c = c.unwrap();
        assert_eq!(c.jid, jid("bob@example.net"));
        assert!(c.listed && t.push && t.forward);
        assert_eq!(c.item().attr("ask"), Some("subscribe"));
        assert_eq!(c.item().attr("subscription"), Some("none"));
    }

    #[test]
    fn a_pre_approval_is_recorded_pushed_and_not_routed() {
        let (c, t) = Contact::apply(None, &jid("bob@example.net"), Outbound, Subscribed);
        let c = c.unwrap();
        assert!(c.state.approved && c.listed);
        assert!(t.push && !t.forward);
        assert_eq!(c.item().attr("approved"), Some("true"));
    }

    #[test]
    fn a_pre_approved_request_is_accepted_by_the_server_without_asking_the_user() {
        let bob = jid("bob@example.net");
        for (old, new) in [
            (st(S::None, false, false), st(S::From, false, false)),
            (st(S::None, true, false), st(S::From, true, false)),
            (st(S::To, false, false), st(S::Both, false, false)),
        ] {
            let approved = State {
                approved: true,
                ..old
            };
            let (c, t) = Contact::apply(Some(listed(approved)), &bob, Inbound, Subscribe);
            let c = c.unwrap();
            assert_eq!(c.state, new, "{old:?}");
            assert!(!c.state.approved, "the approval is used up");
            assert_eq!(t.auto_reply, Some(Subscribed));
            assert!(!t.forward && t.push && !t.keep_request);
            assert_eq!(t.notice, Some(PresenceNotice::Available));
        }
    }

    #[test]
    fn an_unsubscribed_withdraws_a_pre_approval_without_routing() {
        let approved = State {
            approved: true,
            ..st(S::None, false, false)
        };
        let (c, t) = Contact::apply(
            Some(listed(approved)),
            &jid("bob@example.net"),
            Outbound,
            Unsubscribed,
        );
        let c = c.unwrap();
        assert!(!c.state.approved);
        assert!(t.push && !t.forward);
    }

    #[test]
    fn losing_a_subscriber_sends_it_unavailable_presence() {
        let (_, t) = Contact::apply(
            Some(listed(st(S::Both, false, false))),
            &jid("c@x.example"),
            Outbound,
            Unsubscribed,
        );
        assert_eq!(t.notice, Some(PresenceNotice::Unavailable));
        let (_, t) = Contact::apply(
            Some(listed(st(S::From, false, false))),
            &jid("c@x.example"),
            Inbound,
            Unsubscribe,
        );
        assert_eq!(t.notice, Some(PresenceNotice::Unavailable));
        let (_, t) = Contact::apply(
            Some(listed(st(S::Both, false, false))),
            &jid("c@x.example"),
            Outbound,
            Unsubscribe,
        );
        assert_eq!(
            t.notice, None,
            "the user's own subscription ending changes nothing for the contact"
        );
    }

    #[test]
    fn a_change_only_to_the_pending_in_flag_is_not_pushed() {
        let (_, t) = Contact::apply(
            Some(listed(st(S::To, false, false))),
            &jid("c@x.example"),
            Inbound,
            Subscribe,
        );
        assert!(t.forward && !t.push && t.keep_request);
        let (_, t) = Contact::apply(
            Some(listed(st(S::None, true, false))),
            &jid("c@x.example"),
            Inbound,
            Subscribed,
        );
        assert!(t.push);
    }

    #[test]
    fn a_listed_contact_stays_on_the_roster_when_every_subscription_ends() {
        let (c, _) = Contact::apply(
            Some(listed(st(S::To, false, false))),
            &jid("c@x.example"),
            Inbound,
            Unsubscribed,
        );
        let c = c.unwrap();
        assert!(c.listed);
        assert_eq!(c.item().attr("subscription"), Some("none"));
    }

    #[test]
    fn a_change_that_changes_nothing_is_not_stored() {
        let bob = jid("bob@example.net");
        let both = listed(st(S::Both, false, false));
        let (edit, t, _) = Contact::change(Some(both), &bob, Inbound, Subscribed, None);
        assert!(matches!(edit, Edit::Keep));
        assert!(!t.forward && !t.push);
        let (edit, t, _) = Contact::change(None, &bob, Outbound, Unsubscribe, None);
        assert!(
            matches!(edit, Edit::Keep),
            "nothing known, nothing to forget"
        );
        assert!(t.forward, "yet the stanza is routed (A.2.3)");
    }

    #[test]
    fn a_new_request_is_kept_as_it_arrived_until_it_is_answered() {
        let bob = jid("bob@example.net");
        let xml = "<presence type='subscribe'><status>hi</status></presence>".to_string();
        let (edit, _, after) = Contact::change(None, &bob, Inbound, Subscribe, Some(xml.clone()));
        assert!(matches!(&edit, Edit::Save(c) if c.request.as_deref() == Some(xml.as_str())));
        // A repeated request while one is pending changes nothing.
        let (edit, t, _) = Contact::change(
            after.clone(),
            &bob,
            Inbound,
            Subscribe,
            Some("other".into()),
        );
        assert!(matches!(edit, Edit::Keep) && !t.forward);
        let (edit, _, _) = Contact::change(after, &bob, Outbound, Subscribed, None);
        assert!(
            matches!(&edit, Edit::Save(c) if c.request.is_none() && c.state.subscription == S::From)
        );
    }

    #[test]
    fn removing_a_contact_cancels_both_directions() {
        let c = listed(st(S::Both, false, false));
        assert_eq!(c.removal_notices(), vec![Unsubscribe, Unsubscribed]);
        let c = listed(st(S::None, true, true));
        assert_eq!(c.removal_notices(), vec![Unsubscribe, Unsubscribed]);
        let c = listed(st(S::None, false, false));
        assert!(c.removal_notices().is_empty());
    }

    #[test]
    fn roster_items_carry_name_groups_and_state() {
        let c = Contact {
            name: Some("Romeo".into()),
            groups: vec!["Friends".into(), "Lovers".into()],
            ..listed(st(S::Both, false, false))
        };
        assert_eq!(
            c.item().to_xml(),
            "<item xmlns=\"jabber:iq:roster\" jid=\"contact@example.org\" name=\"Romeo\" subscription=\"both\"><group>Friends</group><group>Lovers</group></item>"
        );
    }

    fn set(xml_items: Vec<Element>) -> Element {
        let mut q = Element::new("query", ns::ROSTER);
        for i in xml_items {
            q.append_child(i);
        }
        q
    }

    fn item(jid: &str) -> Element {
        Element::new("item", ns::ROSTER).with_attr("jid", jid)
    }

    #[test]
    fn a_roster_set_is_checked_as_rfc_6121_says() {
        assert_eq!(
            parse_set(&set(vec![
                item("a@x.example")
                    .with_attr("name", "A")
                    .with_attr("subscription", "both")
                    .with_attr("ask", "subscribe")
                    .with_child(Element::new("group", ns::ROSTER).with_text("G"))
            ])),
            Ok(RosterSet::Update {
                jid: jid("a@x.example"),
                name: Some("A".into()),
                groups: vec!["G".into()]
            })
        );
        assert_eq!(
            parse_set(&set(vec![
                item("a@x.example").with_attr("subscription", "remove")
            ])),
            Ok(RosterSet::Remove {
                jid: jid("a@x.example")
            })
        );
        assert_eq!(
            parse_set(&set(vec![])).unwrap_err().0,
            Condition::BadRequest
        );
        assert_eq!(
            parse_set(&set(vec![item("a@x.example"), item("b@x.example")]))
                .unwrap_err()
                .0,
            Condition::BadRequest
        );
        assert_eq!(
            parse_set(&set(vec![item("a@@x")])).unwrap_err().0,
            Condition::JidMalformed
        );
        assert_eq!(
            parse_set(&set(vec![
                item("a@x.example").with_child(Element::new("group", ns::ROSTER))
            ]))
            .unwrap_err()
            .0,
            Condition::NotAcceptable
        );
        let g = || Element::new("group", ns::ROSTER).with_text("G");
        assert_eq!(
            parse_set(&set(vec![
                item("a@x.example").with_child(g()).with_child(g())
            ]))
            .unwrap_err()
            .0,
            Condition::BadRequest
        );
        assert_eq!(
            parse_set(&set(vec![
                item("a@x.example").with_attr("name", "n".repeat(2000))
            ]))
            .unwrap_err()
            .0,
            Condition::NotAcceptable
        );
    }

    #[test]
    fn a_roster_get_with_the_current_version_gets_an_empty_result() {
        let v = RosterVersion {
            epoch: "e1".into(),
            counter: 7,
        };
        let contacts = [listed(st(S::Both, false, false))];
        assert_eq!(v.to_string(), "e1-7");
        assert_eq!(
            answer_get(Some("e1-7"), &v, &contacts),
            RosterAnswer::Unchanged
        );
        match answer_get(Some("e1-6"), &v, &contacts) {
            RosterAnswer::Full(q) => {
                assert_eq!(q.attr("ver"), Some("e1-7"));
                assert_eq!(q.children().count(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_ver_or_no_ver_gets_the_whole_roster() {
        let v = RosterVersion::default();
        assert_eq!(v.to_string(), "0");
        assert!(
            matches!(answer_get(Some(""), &v, &[]), RosterAnswer::Full(q) if q.attr("ver") == Some("0"))
        );
        assert!(
            matches!(answer_get(None, &v, &[]), RosterAnswer::Full(q) if q.attr("ver").is_none())
        );
    }

    #[test]
    fn a_version_from_another_epoch_is_never_current() {
        let v = RosterVersion {
            epoch: "new".into(),
            counter: 3,
        };
        assert!(!v.is_current("old-3"));
        assert!(v.is_current("new-3"));
    }

    #[test]
    fn unlisted_contacts_are_not_in_the_roster() {
        let stranger = Contact {
            listed: false,
            ..listed(st(S::None, false, true))
        };
        match answer_get(None, &RosterVersion::default(), &[stranger]) {
            RosterAnswer::Full(q) => assert_eq!(q.children().count(), 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_push_carries_the_version_and_one_item() {
        let v = RosterVersion {
            epoch: "e".into(),
            counter: 2,
        };
        let p = push(
            &jid("juliet@example.com/balcony"),
            "p1",
            &v,
            removed_item(&jid("nurse@example.com")),
        );
        assert_eq!(
            p.to_xml(),
            "<iq xmlns=\"jabber:client\" type=\"set\" id=\"p1\" to=\"juliet@example.com/balcony\"><query xmlns=\"jabber:iq:roster\" ver=\"e-2\"><item jid=\"nurse@example.com\" subscription=\"remove\"/></query></iq>"
        );
    }
}
