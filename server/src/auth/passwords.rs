//! Password hashing (argon2id, off the async runtime) and the password policy.

use std::sync::Arc;

use anyhow::Context;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::config::HashingSettings;

/// Hashes and verifies passwords on the blocking pool, a bounded number at a time: each
/// hash takes `memory_kib` of memory, so a log-in storm must not take the machine's.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the email is unknown, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl Hasher {
    pub fn new(settings: &HashingSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let dummy = hash_blocking(&params, &crate::clock::new_token())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(cores * 2)),
            dummy_hash: dummy.into(),
        })
    }

    /// The PHC string of a fresh argon2id hash of `password`.
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let (params, password) = (self.params.clone(), password.to_owned());
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .context("hashing task panicked")?
    }

    /// Whether `password` matches `stored`. With `stored = None` (unknown account) the
    /// dummy hash is verified instead, and the answer is always `false`.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await.context("hasher closed")?;
        let known = stored.is_some();
        let hash = stored
            .map(str::to_owned)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .context("verification task panicked")?;
        Ok(known && ok)
    }
}

fn hash_blocking(params: &Params, password: &str) -> anyhow::Result<String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let hash = argon
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    // The parameters come from the stored hash, so old hashes keep verifying after the
    // configured cost changes.
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Passwords shorter than this are refused.
pub const MIN_LENGTH: usize = 10;
/// Longer ones too: argon2 takes any length, but a megabyte "password" is an attack.
pub const MAX_LENGTH: usize = 256;

/// Why a new password is refused, as a sentence for the form.
pub fn check_policy(password: &str, email: &str) -> Result<(), &'static str> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err("Use at least 10 characters.");
    }
    if chars > MAX_LENGTH {
        return Err("Use at most 256 characters.");
    }
    if is_weak(password, email) {
        return Err(
            "This password is too easy to guess: it is common, follows a well-known pattern or contains your email. Try a passphrase of several unrelated words.",
        );
    }
    Ok(())
}

/// Passwords seen again and again in breach corpora, as bases: a password is weak when,
/// after undoing common substitutions and dropping digits and symbols around it, only one
/// of these (or a keyboard walk, or one repeated character) is left.
const COMMON: &[&str] = &[
    "password",
    "passwort",
    "passw",
    "pass",
    "qwerty",
    "qwertz",
    "azerty",
    "asdf",
    "asdfgh",
    "zxcvbn",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "login",
    "master",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "soccer",
    "hockey",
    "basketball",
    "princess",
    "sunshine",
    "shadow",
    "superman",
    "batman",
    "iloveyou",
    "trustno",
    "whatever",
    "starwars",
    "pokemon",
    "computer",
    "internet",
    "secret",
    "abc",
    "abcdef",
    "abcdefg",
    "changeme",
    "default",
    "test",
    "testing",
    "hello",
    "freedom",
    "michael",
    "jennifer",
    "jordan",
    "charlie",
    "buster",
    "summer",
    "winter",
    "spring",
    "autumn",
    "flower",
    "cookie",
    "cheese",
    "chocolate",
    "killer",
    "hunter",
    "ranger",
    "jessica",
    "ashley",
    "daniel",
    "thomas",
    "matrix",
    "mustang",
    "harley",
    "access",
    "ninja",
    "azertyuiop",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "xmpp",
    "jabber",
    "rookery",
    "chat",
    "google",
    "facebook",
    "linkedin",
    "dropbox",
    "samsung",
    "apple",
    "microsoft",
    "love",
    "lovely",
    "angel",
    "baby",
    "family",
    "forever",
    "friends",
    "money",
    "purple",
    "orange",
    "banana",
    "pepper",
    "ginger",
    "liverpool",
    "chelsea",
    "arsenal",
    "barcelona",
    "passpass",
];

const WALKS: &[&str] = &[
    "12345678901234567890",
    "09876543210987654321",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertzuiop",
    "azertyuiop",
    "1qaz2wsx3edc",
    "qazwsxedc",
];

fn is_weak(password: &str, email: &str) -> bool {
    let lower = password.to_lowercase();

    // One character over and over, or a walk along the keyboard or the alphabet.
    let distinct: std::collections::HashSet<char> = lower.chars().collect();
    if distinct.len() <= 3 {
        return true;
    }
    let alnum: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    if WALKS.iter().any(|w| w.contains(alnum.as_str())) {
        return true;
    }

    // A common base word, possibly repeated, dressed up with digits and symbols around it
    // and the usual substitutions inside (p@ssw0rd).
    let trimmed = lower.trim_matches(|c: char| !c.is_alphabetic());
    let base: String = trimmed
        .chars()
        .map(|c| match c {
            '@' | '4' => 'a',
            '3' => 'e',
            '1' | '!' | '|' => 'i',
            '0' => 'o',
            '$' | '5' => 's',
            '7' => 't',
            c => c,
        })
        .filter(|c| c.is_alphanumeric())
        .collect();
    let base = strip_repeats(&base);
    if COMMON.contains(&base.as_str())
        || COMMON
            .iter()
            .any(|c| c.len() >= 4 && base.starts_with(c) && base.len() <= c.len() + 3)
        || WALKS
            .iter()
            .any(|w| base.len() >= 6 && w.contains(base.as_str()))
    {
        return true;
    }

    // The person's own address.
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    local.chars().count() >= 4 && lower.contains(&local)
}

/// `passwordpassword` → `password`.
fn strip_repeats(s: &str) -> String {
    for n in 1..=s.len() / 2 {
        if s.len().is_multiple_of(n) && s.as_bytes().chunks(n).all(|c| c == &s.as_bytes()[..n]) {
            return s[..n].to_string();
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> HashingSettings {
        HashingSettings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = Hasher::new(&fast()).unwrap();
        let stored = h.hash("correct horse battery staple").await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(
            h.verify("correct horse battery staple", Some(&stored))
                .await
                .unwrap()
        );
        assert!(
            !h.verify("correct horse battery stapler", Some(&stored))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let h = Hasher::new(&fast()).unwrap();
        assert_ne!(
            h.hash("same password here").await.unwrap(),
            h.hash("same password here").await.unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_even_with_the_dummy_password() {
        let h = Hasher::new(&fast()).unwrap();
        assert!(!h.verify("anything at all", None).await.unwrap());
    }

    #[test]
    fn the_default_cost_is_owasps_argon2id_recommendation() {
        let s = HashingSettings::default();
        assert_eq!((s.memory_kib, s.iterations, s.parallelism), (19456, 2, 1));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert_eq!(
            check_policy("x7#kQ2", "a@b.c"),
            Err("Use at least 10 characters.")
        );
    }

    #[test]
    fn common_and_patterned_passwords_are_refused() {
        for weak in [
            "password123",
            "Password123!",
            "P@ssw0rd2024",
            "qwertyuiop",
            "1234567890",
            "aaaaaaaaaaaa",
            "letmein!!!!",
            "iloveyou123",
            "passwordpassword",
            "abcdefghijk",
            "Welcome2026!",
            "ada.lovelace99",
        ] {
            assert!(
                check_policy(weak, "ada.lovelace@example.com").is_err(),
                "{weak} should be refused"
            );
        }
    }

    #[test]
    fn passphrases_and_random_passwords_are_accepted() {
        for strong in [
            "correct-horse-battery-staple-42",
            "Tr0ub4dor&3-xylophone",
            "k9#Lm2$pQx7!",
            "purple elephants dance quietly",
        ] {
            assert_eq!(
                check_policy(strong, "ada@example.com"),
                Ok(()),
                "{strong} should be accepted"
            );
        }
    }
}
