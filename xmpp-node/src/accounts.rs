//! Account rules and consequences shared by every way an account changes: the control API
//! (the panel), and in-band registration (XEP-0077, [`crate::xep::register`]). The store
//! checks user names and the plan's account limit; this module holds what lies around it:
//! the password rules, and what a deleted account leaves behind on the running node.

use crate::{node::Node, proto::c2s::StreamError, proto::jid::Jid};

/// Passwords: not empty, at most 1023 bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("The password is empty.".into());
    }
    if password.len() > 1023 {
        return Err(format!(
            "The password is {} bytes long; at most 1023 are allowed.",
            password.len()
        ));
    }
    Ok(())
}

/// The shortest password people may choose for themselves in-band, in characters: what
/// the panel asks of the passwords it sets for chat accounts.
pub const MIN_CHOSEN_PASSWORD_CHARS: usize = 10;

/// A password people choose from their app (XEP-0077 registration and password change):
/// [`check_password`], and at least [`MIN_CHOSEN_PASSWORD_CHARS`] characters. The control
/// API takes shorter ones: the panel checks what it sends.
pub fn check_chosen_password(password: &str) -> Result<(), String> {
    check_password(password)?;
    if password.chars().count() < MIN_CHOSEN_PASSWORD_CHARS {
        return Err(format!(
            "The password is too short: use at least {MIN_CHOSEN_PASSWORD_CHARS} characters."
        ));
    }
    Ok(())
}

/// After an account was deleted from the store: its sessions end with `not-authorized`
/// (whatever was delivered to them before is written first), its cached block list goes.
pub fn account_deleted(node: &Node, account: &Jid) {
    node.blocks.forget(account);
    node.mam.forget(account);
    for session in node.router.sessions(account) {
        session.kick(StreamError::new(
            "not-authorized",
            "This account was deleted.",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_chosen_in_band_are_not_empty_and_not_short() {
        assert_eq!(check_password(""), Err("The password is empty.".into()));
        assert_eq!(check_password("short"), Ok(()));
        assert!(
            check_chosen_password("short")
                .unwrap_err()
                .contains("at least 10")
        );
        assert_eq!(check_chosen_password("ten chars!"), Ok(()));
        assert!(
            check_chosen_password(&"x".repeat(1024))
                .unwrap_err()
                .contains("1023")
        );
    }
}
