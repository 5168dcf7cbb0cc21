//! API keys: `rk_<prefix>_<secret>`, both parts lower-case base32 (`a-z2-7`). The 8-character
//! prefix (40 random bits) names the key in the panel and finds its row; the 52-character
//! secret carries 256 random bits. Only SHA-256 of the whole key is stored, and a presented
//! key is accepted when the hash of what was sent equals the stored one (compared in
//! constant time), so a database leak gives away no usable key.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const KEY_PREFIX: &str = "rk_";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const PREFIX_LEN: usize = 8;
const SECRET_LEN: usize = 52;

/// Read-only keys may only GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    ReadWrite,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::ReadWrite => "read_write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "read_write" => Some(Scope::ReadWrite),
            _ => None,
        }
    }

    /// For people: "read-only", "read and write".
    pub fn label(self) -> &'static str {
        match self {
            Scope::Read => "read-only",
            Scope::ReadWrite => "read and write",
        }
    }
}

/// A freshly made key: shown once, then only its prefix and hash remain.
pub struct NewKey {
    /// The whole key, `rk_<prefix>_<secret>`.
    pub key: String,
    /// `rk_<prefix>`, shown in the panel.
    pub prefix: String,
    pub hash: String,
}

fn base32(bytes: &[u8]) -> String {
    // 5 bits per character, most significant first.
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in bytes {
        buffer = (buffer << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A new random key.
pub fn generate() -> NewKey {
    let mut prefix = [0u8; 5];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut prefix).expect("the operating system's random source failed");
    getrandom::fill(&mut secret).expect("the operating system's random source failed");
    let prefix = format!("{KEY_PREFIX}{}", base32(&prefix));
    let key = format!("{prefix}_{}", base32(&secret));
    NewKey {
        hash: hash(&key),
        prefix,
        key,
    }
}

/// How a key is stored: hex SHA-256 of the whole key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The visible prefix (`rk_<prefix>`) of something that looks like a key, or None.
pub fn parse(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ours = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    (ours(prefix, PREFIX_LEN) && ours(secret, SECRET_LEN))
        .then(|| &presented[..KEY_PREFIX.len() + PREFIX_LEN])
}

/// Whether `presented` is the key whose hash is `stored_hash`, in constant time.
pub fn matches(presented: &str, stored_hash: &str) -> bool {
    hash(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_to_its_prefix_and_matches_its_hash() {
        let k = generate();
        assert!(k.key.starts_with("rk_"));
        assert_eq!(k.key.len(), 3 + 8 + 1 + 52);
        assert_eq!(parse(&k.key), Some(k.prefix.as_str()));
        assert!(matches(&k.key, &k.hash));
        assert_eq!(k.hash.len(), 64);
    }

    #[test]
    fn keys_are_unique_and_a_changed_key_does_not_match() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.key, b.key);
        assert_ne!(a.prefix, b.prefix);
        let mut tampered = a.key.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(parse(&tampered), Some(a.prefix.as_str()));
        assert!(!matches(&tampered, &a.hash));
    }

    #[test]
    fn things_that_are_not_keys_do_not_parse() {
        for s in [
            "",
            "rk_",
            "Bearer rk_abc",
            "rk_abcdefgh",
            "rk_abcdefgh_short",
            "rk_ABCDEFGH_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sk_abcdefgh_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rk_abcdefgh_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
        assert_eq!(
            parse("rk_abcdefgh_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some("rk_abcdefgh")
        );
    }

    #[test]
    fn base32_packs_five_bits_per_character() {
        assert_eq!(base32(&[0; 5]), "aaaaaaaa");
        assert_eq!(base32(&[0xff; 5]), "77777777");
        assert_eq!(base32(&[0u8; 32]).len(), 52);
    }
}
