//! In-band registration (XEP-0077) on the running node: the protocol is in
//! [`crate::proto::register`]; this module decides and writes.
//!
//! - Before authentication ([`register`], asked by the connection for
//!   [`crate::proto::c2s::Output::Register`]): only on a domain whose spec switches
//!   registration on (`features.registration`, off by default), within the per-address
//!   limit ([`RegistrationLimiter`], `limits.registrations_per_ip_per_hour`), with the
//!   control API's rules: the store's user-name rules and account limit, its password rule
//!   plus the panel's minimum length ([`crate::accounts::check_chosen_password`]), the same
//!   credential storage. A domain frozen for a move refuses. Refusals that reached the
//!   store (a taken name, a full domain) slow the address down like failed logins
//!   ([`crate::net::c2s::AuthThrottle`]): each cost a key derivation, and a taken name tells
//!   that an account exists.
//! - After authentication ([`handle`]): the account's own password change (§3.3) and its
//!   removal (§3.2). These work whatever the switch says: the switch is about strangers
//!   creating accounts, while changing one's password and leaving are the account holder's
//!   business (as in Prosody and ejabberd). So the server's disco#info always lists
//!   `jabber:iq:register` to logged-in clients, and the stream feature only appears where
//!   registration is open.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    accounts::{account_deleted, check_chosen_password},
    control::moving::moving_text,
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        register::{self, Refusal, Request},
        stanza::iq_result,
    },
    router::SessionHandle,
    store::{StoreError, normalize_username},
};

/// The window of the per-address limit.
const WINDOW: Duration = Duration::from_secs(3600);

/// At most `per_hour` in-band registrations from one client address in any hour (an IPv6
/// address counts as its /64, which one host usually has whole). A registration takes a
/// place before it writes and gives it back when it fails, so a mistyped name costs
/// nothing and two registrations at once cannot both take the last place.
pub struct RegistrationLimiter {
    per_hour: u32,
    taken: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RegistrationLimiter {
    /// `per_hour` 0: no limit.
    pub fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            taken: Mutex::default(),
        }
    }

    /// Takes a place for a registration from `ip` at `now`, or says how long until the
    /// oldest place is free again.
    pub fn try_take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_hour == 0 {
            return Ok(());
        }
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what is out of the window everywhere, so the map holds the last hour only.
        taken.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = taken.entry(address_key(ip)).or_default();
        if times.len() >= self.per_hour as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(WINDOW.saturating_sub(now.saturating_duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }

    /// Gives back the place the last [`Self::try_take`] for `ip` took (the registration
    /// failed).
    pub fn give_back(&self, ip: IpAddr) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(times) = taken.get_mut(&address_key(ip)) {
            times.pop_back();
        }
    }
}

/// What the limit counts: an IPv4 address, or the /64 of an IPv6 one.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Whether `domain` lets people register in-band (its applied spec says so).
pub fn open_on(node: &Node, domain: &str) -> bool {
    node.host(domain)
        .is_some_and(|h| h.policy.as_ref().is_some_and(|p| p.features.registration))
}

/// Creates an account asked for before authentication, from the client address `ip`.
pub async fn register(
    node: &Node,
    ip: IpAddr,
    domain: &str,
    username: &str,
    password: &str,
) -> Result<(), Refusal> {
    // Asked again: the switch may have gone off since the stream header.
    if !open_on(node, domain) {
        return Err(Refusal::Off {
            domain: domain.to_string(),
        });
    }
    check_chosen_password(password).map_err(Refusal::NotAcceptable)?;
    let username = normalize_username(domain, username).map_err(refusal_of)?;
    node.registrations
        .try_take(ip, Instant::now())
        .map_err(|wait| Refusal::RateLimited {
            retry_after_secs: wait.as_secs(),
        })?;
    let created = async {
        let _permit = node.writes.enter().await;
        if node.is_frozen(domain) {
            return Err(Refusal::Moving(moving_text(domain)));
        }
        let iterations = node.settings.node.scram_iterations;
        node.store
            .add_account(domain, &username, password, iterations)
            .await
            .map_err(refusal_of)
    }
    .await;
    match created {
        Ok(account) => {
            tracing::info!(username = account.username, "account registered in-band");
            Ok(())
        }
        Err(refusal) => {
            node.registrations.give_back(ip);
            tracing::info!(?refusal, "in-band registration refused");
            // A refusal from the store cost a key derivation and says whether a name is
            // taken: slowed down per address like failed logins.
            if matches!(
                refusal,
                Refusal::Taken { .. } | Refusal::AccountLimit { .. }
            ) {
                let delay = node.auth_throttle.record_failure(&[format!("ip:{ip}")]);
                tokio::time::sleep(delay).await;
            }
            Err(refusal)
        }
    }
}

/// The store's refusal as XEP-0077 names it.
fn refusal_of(e: StoreError) -> Refusal {
    match e {
        StoreError::AccountExists(jid) => Refusal::Taken {
            username: jid.split('@').next().unwrap_or_default().to_string(),
        },
        StoreError::AccountLimit(domain, max) => Refusal::AccountLimit { domain, max },
        StoreError::BadUsername(name, why) => {
            Refusal::NotAcceptable(format!("\"{name}\" cannot be a user name: {why}."))
        }
        StoreError::BadPassword(why) => {
            Refusal::NotAcceptable(format!("This password cannot be used: {why}."))
        }
        StoreError::NoSuchVhost(domain) => Refusal::Off { domain },
        e => {
            tracing::error!(error = format!("{e:#}"), "an in-band account change failed");
            Refusal::Internal
        }
    }
}

/// A `jabber:iq:register` get or set from a logged-in session, addressed to its server:
/// what is registered, a new password (§3.3), or the account's removal (§3.2: answered,
/// then every session of the account ends with `not-authorized`).
pub async fn handle(node: &Node, me: &SessionHandle, iq: &Element) {
    let account = me.jid.bare();
    let domain = account.domain().to_string();
    let username = account.node().unwrap_or_default().to_string();
    let answer = match register::parse(iq) {
        Request::Fields => Ok(iq_result(iq).with_child(register::registered(&username))),
        Request::Set {
            username: named,
            password,
        } => change_password(node, &account, &named, &password)
            .await
            .map(|()| iq_result(iq)),
        Request::Remove => match remove(node, &domain, &username).await {
            Ok(()) => {
                me.deliver(iq_result(iq));
                account_deleted(node, &account);
                return;
            }
            Err(refusal) => Err(refusal),
        },
        Request::Invalid(why) => Err(Refusal::NotAcceptable(why.into())),
    };
    me.deliver(answer.unwrap_or_else(|refusal| refusal.error(iq)));
}

/// §3.3: the user name must be the account's own. Called with a write permit held.
async fn change_password(
    node: &Node,
    account: &Jid,
    named: &str,
    password: &str,
) -> Result<(), Refusal> {
    let domain = account.domain();
    let username = account.node().unwrap_or_default();
    if normalize_username(domain, named).ok().as_deref() != Some(username) {
        return Err(Refusal::NotAuthorized(
            "You can only change the password of the account you are logged in with.",
        ));
    }
    check_chosen_password(password).map_err(Refusal::NotAcceptable)?;
    if node.is_frozen(domain) {
        return Err(Refusal::Moving(moving_text(domain)));
    }
    let iterations = node.settings.node.scram_iterations;
    node.store
        .set_password(domain, username, password, iterations)
        .await
        .map_err(refusal_of)?;
    tracing::info!("password changed in-band");
    Ok(())
}

/// §3.2. Called with a write permit held.
async fn remove(node: &Node, domain: &str, username: &str) -> Result<(), Refusal> {
    if node.is_frozen(domain) {
        return Err(Refusal::Moving(moving_text(domain)));
    }
    node.store
        .remove_account(domain, username)
        .await
        .map_err(refusal_of)?;
    tracing::info!("account removed in-band");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        node::testing::{apply_spec, bind, delivered, node_with_spec, stanza},
        proto::{ns, sasl::ScramHash},
        router::Delivery,
    };

    const DOMAIN: &str = "example.com";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limiter_lets_n_registrations_through_per_address_and_hour() {
        let limiter = RegistrationLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(limiter.try_take(ip("192.0.2.1"), t0), Ok(()));
        assert_eq!(
            limiter.try_take(ip("192.0.2.1"), t0 + Duration::from_secs(600)),
            Ok(())
        );
        // The third waits until the first is an hour old.
        assert_eq!(
            limiter.try_take(ip("192.0.2.1"), t0 + Duration::from_secs(900)),
            Err(Duration::from_secs(2700))
        );
        // Another address has its own count.
        assert_eq!(limiter.try_take(ip("192.0.2.2"), t0), Ok(()));
        // An hour after the first, one place is free again.
        assert_eq!(limiter.try_take(ip("192.0.2.1"), t0 + WINDOW), Ok(()));
        assert!(
            limiter
                .try_take(ip("192.0.2.1"), t0 + WINDOW + Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn a_failed_registration_gives_its_place_back() {
        let limiter = RegistrationLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(limiter.try_take(ip("192.0.2.1"), t0), Ok(()));
        limiter.give_back(ip("192.0.2.1"));
        assert_eq!(limiter.try_take(ip("192.0.2.1"), t0), Ok(()));
        assert!(limiter.try_take(ip("192.0.2.1"), t0).is_err());
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address_and_mapped_ipv4_as_its_ipv4() {
        let limiter = RegistrationLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(limiter.try_take(ip("2001:db8:1:2::1"), t0), Ok(()));
        assert!(limiter.try_take(ip("2001:db8:1:2::ffff"), t0).is_err());
        assert_eq!(limiter.try_take(ip("2001:db8:1:3::1"), t0), Ok(()));
        assert_eq!(limiter.try_take(ip("::ffff:192.0.2.9"), t0), Ok(()));
        assert!(limiter.try_take(ip("192.0.2.9"), t0).is_err());
    }

    #[test]
    fn without_a_limit_everything_passes() {
        let limiter = RegistrationLimiter::new(0);
        for _ in 0..100 {
            assert_eq!(limiter.try_take(ip("192.0.2.1"), Instant::now()), Ok(()));
        }
    }

    #[tokio::test]
    async fn registration_follows_the_switch_the_account_rules_and_the_plans_limit() {
        let spec = |generation: i64, registration: bool| {
            json!({"domain": DOMAIN, "generation": generation,
                   "limits": {"max_accounts": 2},
                   "features": {"registration": registration}})
        };
        let (node, _dir) = node_with_spec(spec(1, false), &["alice"]).await;
        let from = ip("192.0.2.1");
        assert_eq!(
            register(&node, from, DOMAIN, "bob", "a-password-1").await,
            Err(Refusal::Off {
                domain: DOMAIN.into()
            })
        );
        apply_spec(&node, spec(2, true)).await;
        assert!(open_on(&node, DOMAIN));
        assert_eq!(
            register(&node, from, DOMAIN, "alice", "a-password-1").await,
            Err(Refusal::Taken {
                username: "alice".into()
            })
        );
        assert!(matches!(
            register(&node, from, DOMAIN, "bob", "").await,
            Err(Refusal::NotAcceptable(m)) if m == "The password is empty."
        ));
        assert!(matches!(
            register(&node, from, DOMAIN, "bob", "short").await,
            Err(Refusal::NotAcceptable(m)) if m.contains("at least 10 characters")
        ));
        assert!(matches!(
            register(&node, from, DOMAIN, "b@b", "a-password-1").await,
            Err(Refusal::NotAcceptable(m)) if m.starts_with("\"b@b\" cannot be a user name")
        ));
        assert_eq!(
            register(&node, from, DOMAIN, "Bob", "a-password-1").await,
            Ok(())
        );
        // Stored as the control API stores it: the user logs in with it.
        let creds = node
            .store
            .credentials(DOMAIN, "bob", ScramHash::Sha256)
            .await
            .unwrap();
        assert!(creds.is_some());
        assert_eq!(
            register(&node, from, DOMAIN, "carol", "a-password-1").await,
            Err(Refusal::AccountLimit {
                domain: DOMAIN.into(),
                max: 2
            })
        );
    }

    #[tokio::test]
    async fn the_per_address_limit_refuses_and_a_frozen_domain_refuses() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "features": {"registration": true}}),
            &[],
        )
        .await;
        let from = ip("192.0.2.7");
        for n in 0..5 {
            assert_eq!(
                register(&node, from, DOMAIN, &format!("user{n}"), "a-password-1").await,
                Ok(())
            );
        }
        assert!(matches!(
            register(&node, from, DOMAIN, "user5", "a-password-1").await,
            Err(Refusal::RateLimited { retry_after_secs }) if retry_after_secs > 3500
        ));
        node.store.set_vhost_move(DOMAIN, None).await.unwrap();
        node.reload_vhosts().await.unwrap();
        assert!(matches!(
            register(&node, ip("192.0.2.8"), DOMAIN, "user6", "a-password-1").await,
            Err(Refusal::Moving(_))
        ));
    }

    #[tokio::test]
    async fn a_logged_in_account_changes_its_password_and_removes_itself() {
        // Registration off: an account's own changes work all the same.
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let (_phone, mut to_phone) = bind(&node, "alice@example.com/phone");
        let iq = |id: &str, query: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' type='{}' id='{id}'><query xmlns='jabber:iq:register'>{query}</query></iq>",
                if query.is_empty() { "get" } else { "set" }
            ))
        };
        handle(&node, &alice, &iq("g", "")).await;
        let got = delivered(&mut to_alice).remove(0);
        let q = got.get_child("query", ns::REGISTER).unwrap();
        assert!(q.has_child("registered", ns::REGISTER));
        assert_eq!(
            q.child_text("username", ns::REGISTER).as_deref(),
            Some("alice")
        );

        let before = node
            .store
            .credentials(DOMAIN, "alice", ScramHash::Sha256)
            .await
            .unwrap();
        handle(
            &node,
            &alice,
            &iq(
                "p1",
                "<username>bob</username><password>new-one-12</password>",
            ),
        )
        .await;
        let got = delivered(&mut to_alice).remove(0);
        assert!(got.to_xml().contains("<not-authorized"), "{}", got.to_xml());
        handle(
            &node,
            &alice,
            &iq(
                "p2",
                "<username>Alice</username><password>new-one-12</password>",
            ),
        )
        .await;
        let got = delivered(&mut to_alice).remove(0);
        assert_eq!(got.attr("type"), Some("result"), "{}", got.to_xml());
        let after = node
            .store
            .credentials(DOMAIN, "alice", ScramHash::Sha256)
            .await
            .unwrap();
        assert_ne!(before, after);

        handle(&node, &alice, &iq("rm", "<remove/>")).await;
        // The answer first, then the stream ends; the other session ends too.
        let first = to_alice.try_recv().unwrap();
        assert!(
            matches!(&first, Delivery::Stanza(s) if s.attr("type") == Some("result")),
            "{first:?}"
        );
        assert!(
            matches!(to_alice.try_recv(), Ok(Delivery::Kick(k)) if k.condition == "not-authorized")
        );
        assert!(
            matches!(to_phone.try_recv(), Ok(Delivery::Kick(k)) if k.condition == "not-authorized")
        );
        assert!(!node.store.account_exists(DOMAIN, "alice").await.unwrap());
        assert!(node.store.account_exists(DOMAIN, "bob").await.unwrap());
    }
}
