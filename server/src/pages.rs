//! Glue between handlers and the Leptos pages: the page context (navigation, CSRF token,
//! one-off notices) for the person asking.
//!
//! After an action the browser is redirected with `?notice=<code>`; the code maps to a fixed
//! sentence here, so no text from the address bar is ever shown.

use rookery_frontend::{Flash, FlashKind, NavOrg, NavUser, PageCtx};
use serde::Deserialize;

use crate::{auth::session::Visitor, error::AppResult, orgs, state::AppState};

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

/// The sentence for a notice code.
pub fn notice(code: &str) -> Option<Flash> {
    let (kind, text) = match code {
        "welcome" => (
            FlashKind::Success,
            "Welcome to Rookery! Your account and organisation are ready.",
        ),
        "logged-out" => (FlashKind::Info, "You have logged out."),
        "password-changed" => (
            FlashKind::Success,
            "Your password has been changed. Your other sessions were logged out.",
        ),
        "password-reset" => (
            FlashKind::Success,
            "Your password has been reset. Log in with the new one.",
        ),
        "reset-sent" => (
            FlashKind::Info,
            "If an account exists for that address, we have sent it a link to reset the password. The link works for one hour.",
        ),
        "verified" => (
            FlashKind::Success,
            "Thank you, your email address is confirmed.",
        ),
        "verification-sent" => (FlashKind::Info, "We have sent you a new confirmation link."),
        "invited" => (FlashKind::Success, "Invitation sent."),
        "invitation-revoked" => (FlashKind::Info, "Invitation revoked."),
        "member-removed" => (FlashKind::Info, "Member removed."),
        "joined" => (FlashKind::Success, "You have joined the organisation."),
        "plan-created" => (FlashKind::Success, "Plan created."),
        "account-created" => (
            FlashKind::Success,
            "Chat account created. It can log in right away.",
        ),
        "account-deleted" => (FlashKind::Info, "Chat account deleted."),
        "paid" => (
            FlashKind::Success,
            "Thank you for your payment. The domain is being set up; this takes a few seconds.",
        ),
        "plan-changed" => (
            FlashKind::Success,
            "Plan changed. The domain's server gets the new limits within seconds.",
        ),
        "plan-change-sent" => (
            FlashKind::Info,
            "The new plan was sent to Stripe; it applies as soon as Stripe confirms it.",
        ),
        "plan-paid" => (
            FlashKind::Success,
            "Thank you for your payment. The domain moves to its new plan within seconds.",
        ),
        "checkout-failed" => (
            FlashKind::Error,
            "The payment page could not be opened. Your order is kept: use Pay now to try again.",
        ),
        "plan-updated" => (
            FlashKind::Success,
            "Plan saved. Domains on it get the new limits within seconds.",
        ),
        "tenant-updated" => (FlashKind::Success, "Organisation updated."),
        "org-created" => (FlashKind::Success, "Organisation created."),
        "node-cordoned" => (
            FlashKind::Info,
            "Node cordoned: it keeps its domains and gets no new ones.",
        ),
        "node-active" => (
            FlashKind::Success,
            "Node active: it takes new domains again.",
        ),
        "node-draining" => (
            FlashKind::Info,
            "Node draining: its domains are being moved to other nodes.",
        ),
        "node-removed" => (FlashKind::Success, "Node removed from the pool."),
        "key-revoked" => (
            FlashKind::Info,
            "API key revoked: requests with it now get 401.",
        ),
        "location-revoked" => (
            FlashKind::Info,
            "Probe location revoked: its token no longer works and it no longer counts.",
        ),
        _ => return None,
    };
    Some(Flash {
        kind,
        text: text.into(),
    })
}

/// The context of a page for `visitor`, with `current_org` highlighted in the navigation.
pub async fn ctx(
    state: &AppState,
    visitor: &Visitor,
    title: impl Into<String>,
    page: &'static str,
    current_org: Option<&orgs::db::Org>,
    notice_code: Option<&str>,
) -> AppResult<PageCtx> {
    let user = match &visitor.user {
        Some(u) => {
            let orgs = orgs::db::orgs_of_user(&state.db, &u.id).await?;
            Some(NavUser {
                email: u.email.clone(),
                is_admin: u.is_admin,
                email_verified: u.email_verified,
                orgs: orgs
                    .iter()
                    .map(|(o, _)| NavOrg {
                        id: o.id.0.clone(),
                        name: o.name.clone(),
                    })
                    .collect(),
                current_org: current_org.map(|o| NavOrg {
                    id: o.id.0.clone(),
                    name: o.name.clone(),
                }),
            })
        }
        None => None,
    };
    Ok(PageCtx {
        title: title.into(),
        page,
        csrf: visitor.csrf.clone(),
        user,
        flash: notice_code.and_then(notice),
        refresh: None,
    })
}

/// Where to go after logging in: only a path on this site (never `//host` or a URL).
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?.trim();
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.contains(['\r', '\n']);
    ok.then(|| next.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_log_in() {
        assert_eq!(
            safe_next(Some("/o/abc/team")).as_deref(),
            Some("/o/abc/team")
        );
        assert_eq!(safe_next(Some("//evil.example/")), None);
        assert_eq!(safe_next(Some("https://evil.example/")), None);
        assert_eq!(safe_next(Some("/\\evil.example")), None);
        assert_eq!(safe_next(None), None);
    }

    #[test]
    fn unknown_notice_codes_show_nothing() {
        assert!(notice("welcome").is_some());
        assert!(notice("<script>").is_none());
    }
}
