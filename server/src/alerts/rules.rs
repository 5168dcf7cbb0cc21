//! The rules of alerts as pure functions: which contact details are acceptable (email,
//! webhook URL, JID) and when a failed delivery is tried again.

use std::net::IpAddr;

use rookery_node::proto::jid::Jid;

/// Waits before the 1st, 2nd, … retry: 10 s, 30 s, 2 min, 10 min, 30 min, then hourly.
const RETRY_DELAYS: [i64; 6] = [10, 30, 120, 600, 1800, 3600];

/// Seconds to wait after the `attempts`-th failed attempt (1 for the first failure).
pub fn retry_delay(attempts: i64) -> i64 {
    let i = usize::try_from(attempts.max(1) - 1).unwrap_or(usize::MAX);
    RETRY_DELAYS[i.min(RETRY_DELAYS.len() - 1)]
}

/// When to try again after the `attempts`-th failure at `now`, or `None` to give up
/// (the retry would fall after `give_up_at`).
pub fn next_attempt(attempts: i64, now: i64, give_up_at: i64) -> Option<i64> {
    next_attempt_capped(attempts, now, give_up_at, i64::MAX)
}

/// [`next_attempt`] with no wait longer than `max_delay` seconds (the setting
/// `alerts.max_retry_delay_secs`; tests make it short).
pub fn next_attempt_capped(
    attempts: i64,
    now: i64,
    give_up_at: i64,
    max_delay: i64,
) -> Option<i64> {
    let at = now + retry_delay(attempts).min(max_delay.max(1));
    (at <= give_up_at).then_some(at)
}

/// An email address for alerts; empty switches email alerts off.
pub fn email(input: &str) -> Result<Option<String>, &'static str> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    crate::auth::email::parse(input)
        .map(|e| Some(e.display))
        .map_err(|_| "Enter an email address like ops@example.com, or leave it empty for no email alerts.")
}

/// A bare JID `user@domain` for alerts (an `xmpp:` prefix is dropped); empty switches XMPP
/// alerts off. Returns it normalised (RFC 7622).
pub fn jid(input: &str) -> Result<Option<String>, &'static str> {
    let input = input.trim();
    let input = input.strip_prefix("xmpp:").unwrap_or(input);
    if input.is_empty() {
        return Ok(None);
    }
    if !input.contains('@') {
        return Err("Enter a full chat address with a user name, like ops@chat.example.com.");
    }
    let jid = Jid::parse(input).map_err(
        |_| "This is not a valid chat address (JID). Use the form user@chat.example.com.",
    )?;
    if jid.resource().is_some() {
        return Err("Leave out the resource (the part from the /): alerts go to user@domain.");
    }
    if jid.domain().parse::<IpAddr>().is_ok() || !jid.domain().contains('.') {
        return Err("The chat address needs a domain name, like ops@chat.example.com.");
    }
    Ok(Some(jid.to_string()))
}

/// A webhook URL: `https://` to a public host; with `allow_local` (tests and private
/// deployments) also `http://` and loopback or private addresses. No user name or password
/// in it (it is shown in logs and pages), no fragment. Empty switches webhooks off.
pub fn webhook_url(input: &str, allow_local: bool) -> Result<Option<url::Url>, &'static str> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    if input.len() > 2000 {
        return Err("Use a URL of at most 2,000 characters.");
    }
    let url = url::Url::parse(input).map_err(
        |_| "This is not a URL. Enter the full address, like https://hooks.example.com/rookery.",
    )?;
    match url.scheme() {
        "https" => {}
        "http" if allow_local => {}
        "http" => return Err("Use an https:// URL: alerts are only sent over TLS."),
        _ => return Err("Use an https:// URL."),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("Leave user names and passwords out of the URL; check the signature instead.");
    }
    if url.fragment().is_some() {
        return Err("Leave out the # part of the URL.");
    }
    let local = match url.host() {
        None => return Err("The URL needs a host name."),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost") || !d.contains('.')
        }
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
    };
    if local && !allow_local {
        return Err(
            "The URL must point at a public host: loopback, private and local addresses are not allowed.",
        );
    }
    Ok(Some(url))
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, ULA),
/// link-local, shared (CGNAT), unspecified, multicast, documentation or broadcast. Webhooks
/// must not reach into the platform's own network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_ten_seconds_to_hourly() {
        let delays: Vec<i64> = (1..=8).map(retry_delay).collect();
        assert_eq!(delays, [10, 30, 120, 600, 1800, 3600, 3600, 3600]);
        assert_eq!(
            retry_delay(0),
            10,
            "a zero count is treated as the first failure"
        );
    }

    #[test]
    fn retries_stop_after_the_give_up_time() {
        let created = 1_000_000;
        let give_up = created + 86_400;
        assert_eq!(next_attempt(1, created, give_up), Some(created + 10));
        assert_eq!(
            next_attempt(6, created + 80_000, give_up),
            Some(created + 83_600)
        );
        assert_eq!(next_attempt(7, created + 83_600, give_up), None);
        // Over a day of failures the schedule makes about 29 attempts, then gives up.
        let (mut now, mut attempts) = (created, 1);
        while let Some(at) = next_attempt(attempts, now, give_up) {
            now = at;
            attempts += 1;
        }
        assert_eq!(attempts, 29);
        assert!(now <= give_up);
    }

    #[test]
    fn a_retry_cap_shortens_every_wait_but_never_below_a_second() {
        assert_eq!(next_attempt_capped(1, 100, 10_000, 1), Some(101));
        assert_eq!(next_attempt_capped(6, 100, 10_000, 60), Some(160));
        assert_eq!(next_attempt_capped(1, 100, 10_000, 0), Some(101));
        assert_eq!(next_attempt_capped(2, 100, 10_000, 3600), Some(130));
    }

    #[test]
    fn jids_must_be_bare_user_addresses_and_are_normalised() {
        assert_eq!(jid(""), Ok(None));
        assert_eq!(jid("  "), Ok(None));
        assert_eq!(
            jid(" Ops@Chat.Example.COM ").unwrap().as_deref(),
            Some("ops@chat.example.com")
        );
        assert_eq!(
            jid("xmpp:ops@chat.example.com").unwrap().as_deref(),
            Some("ops@chat.example.com")
        );
        assert!(jid("chat.example.com").unwrap_err().contains("user name"));
        assert!(
            jid("ops@chat.example.com/phone")
                .unwrap_err()
                .contains("resource")
        );
        assert!(
            jid("o ps@chat.example.com")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(jid("ops@").is_err());
        assert!(jid("ops@localhost").unwrap_err().contains("domain name"));
        assert!(jid("ops@[::1]").is_err());
    }

    #[test]
    fn webhook_urls_are_https_to_public_hosts_unless_local_ones_are_allowed() {
        let ok = |s: &str, local| webhook_url(s, local).map(|u| u.map(|u| u.to_string()));
        assert_eq!(ok("", false), Ok(None));
        assert_eq!(
            ok("https://hooks.example.com/rookery?x=1", false),
            Ok(Some("https://hooks.example.com/rookery?x=1".into()))
        );
        assert!(
            ok("http://hooks.example.com/", false)
                .unwrap_err()
                .contains("https")
        );
        assert!(ok("ftp://hooks.example.com/", true).is_err());
        assert!(
            ok("hooks.example.com/x", false)
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(ok("https://user:pw@hooks.example.com/", false).is_err());
        assert!(ok("https://hooks.example.com/#frag", false).is_err());
        for local in [
            "https://127.0.0.1/",
            "https://localhost:8080/",
            "https://10.1.2.3/",
            "https://192.168.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://intranet/",
        ] {
            assert!(ok(local, false).unwrap_err().contains("public"), "{local}");
            assert!(ok(local, true).is_ok(), "{local}");
        }
        assert_eq!(
            ok("http://127.0.0.1:9000/hook", true),
            Ok(Some("http://127.0.0.1:9000/hook".into()))
        );
        assert!(ok("https://93.184.215.14/", false).is_ok());
    }

    #[test]
    fn public_addresses_are_told_from_internal_ones() {
        for internal in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fc00::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.215.14", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn emails_are_checked_and_empty_means_off() {
        assert_eq!(email(""), Ok(None));
        assert_eq!(
            email(" ops@example.com ").unwrap().as_deref(),
            Some("ops@example.com")
        );
        assert!(email("not-an-address").is_err());
    }
}
