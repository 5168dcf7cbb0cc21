//! Secrets the panel must be able to read back (the secret it presents to each node, later
//! probe account passwords) are sealed with ChaCha20-Poly1305 under the panel's secret key,
//! so a copy of the database alone does not hand over the node pool.
//!
//! The key comes from the `secret_key` setting (64 hex digits; every panel instance of a
//! deployment needs the same one) or, when that is empty, from `<data_dir>/secret.key`,
//! generated on first start.

use std::path::Path;

use anyhow::Context;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key");
        Self {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
        }
    }

    /// The configured key (hex), or the key file under `data_dir`, created if missing.
    pub fn load(configured: &str, data_dir: &Path) -> anyhow::Result<Self> {
        let configured = configured.trim();
        if !configured.is_empty() {
            return Ok(Self::new(
                parse_key(configured).context("the secret_key setting")?,
            ));
        }
        let path = data_dir.join("secret.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(Self::new(
                parse_key(text.trim()).with_context(|| format!("the key in {}", path.display()))?,
            ));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        write_private(&path, hex::encode(key).as_bytes())?;
        tracing::warn!(
            path = %path.display(),
            "generated the panel's secret key; back it up, and give every panel instance the same one (setting secret_key)"
        );
        Ok(Self::new(key))
    }

    /// `v1.<hex nonce>.<hex ciphertext+tag>`; `context` binds the value to its use (e.g.
    /// `node-secret:<node id>`), so a sealed value cannot be swapped into another row.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("sealing cannot fail for small inputs");
        format!("v1.{}.{}", hex::encode(nonce), hex::encode(buf))
    }

    pub fn open(&self, context: &str, sealed: &str) -> anyhow::Result<String> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(nonce), Some(data), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("not a sealed value");
        };
        let nonce: [u8; NONCE_LEN] = hex::decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .context("a bad nonce")?;
        let mut buf = hex::decode(data).context("bad ciphertext")?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("cannot open a sealed value: wrong secret key?"))?;
        String::from_utf8(plain.to_vec()).context("a sealed value that is not text")
    }
}

fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .context("expected 64 hexadecimal digits (32 bytes)")
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let s = Sealer::new([7; 32]);
        let sealed = s.seal("node-secret:a", "hunter2hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(s.open("node-secret:a", &sealed).unwrap(), "hunter2hunter2");
        assert!(s.open("node-secret:b", &sealed).is_err());
        assert!(Sealer::new([8; 32]).open("node-secret:a", &sealed).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, s.seal("node-secret:a", "hunter2hunter2"));
    }

    #[test]
    fn the_key_file_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load("", dir.path()).unwrap();
        let sealed = a.seal("x", "y");
        let b = Sealer::load("", dir.path()).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), "y");
        assert!(Sealer::load("abc", dir.path()).is_err());
    }
}
