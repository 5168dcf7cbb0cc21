//! Account rules and consequences shared by every way an account changes: the control API
//! (the panel), and in-band registration (XEP-0077, [`crate::xep::register`]). The store
//! checks user names and the plan's account limit; this module holds what lies around it:
//! the password rule, and what a deleted account leaves behind on the running node.

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

/// After an account was deleted from the store: its sessions end with `not-authorized`
/// (whatever was delivered to them before is written first), its cached block list goes.
pub fn account_deleted(node: &Node, account: &Jid) {
    node.blocks.forget(account);
    for session in node.router.sessions(account) {
        session.kick(StreamError::new(
            "not-authorized",
            "This account was deleted.",
        ));
    }
}
