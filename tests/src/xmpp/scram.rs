//! SCRAM-SHA-256 (RFC 5802, RFC 7677), client side, without I/O and without channel
//! binding (`n,,`): the load generator logs in with it.
//!
//! ```text
//!  ScramClient::new(user, nonce) ─► client_first()       ─► <auth/>
//!  <challenge/>                  ─► server_first(msg, salted_password?) ─► <response/>
//!  <success/>                    ─► verify_server_final(msg)
//! ```
//!
//! PBKDF2 is the expensive step. Real clients keep the salted password per
//! (user, salt, iterations) and so does the generator (DESIGN.md): [`salted_password`]
//! is public so the caller can cache it, and `server_first` takes the cached value.

use anyhow::{Context, bail, ensure};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The GS2 header of a client that neither supports nor asks for channel binding.
const GS2_HEADER: &str = "n,,";

/// What the server's first message asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst {
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// One SCRAM-SHA-256 exchange.
pub struct ScramClient {
    client_first_bare: String,
    nonce: String,
    /// `ServerSignature` expected in the server-final message, once computed.
    expected_server_signature: Option<Vec<u8>>,
}

/// `Hi(password, salt, i)` of RFC 5802 with HMAC-SHA-256.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A fresh client nonce: 18 random bytes, printable once in base64.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    B64.encode(bytes)
}

/// Reads `server-first-message` (RFC 5802 §7): `r=…,s=…,i=…`, extensions refused.
pub fn parse_server_first(
    message: &str,
    client_nonce: &str,
) -> anyhow::Result<(String, ServerFirst)> {
    let mut parts = message.split(',');
    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .with_context(|| format!("server-first-message has no nonce: {message:?}"))?;
    ensure!(
        nonce.len() > client_nonce.len() && nonce.starts_with(client_nonce),
        "the server's nonce does not extend ours: {message:?}"
    );
    let salt = parts
        .next()
        .and_then(|p| p.strip_prefix("s="))
        .with_context(|| format!("server-first-message has no salt: {message:?}"))?;
    let salt = B64.decode(salt).context("the salt is not base64")?;
    let iterations: u32 = parts
        .next()
        .and_then(|p| p.strip_prefix("i="))
        .with_context(|| format!("server-first-message has no iteration count: {message:?}"))?
        .parse()
        .context("the iteration count is not a number")?;
    ensure!(
        parts.next().is_none(),
        "unexpected extensions in {message:?}"
    );
    ensure!(
        iterations >= 4096,
        "the server asks for only {iterations} iterations"
    );
    Ok((nonce.to_string(), ServerFirst { salt, iterations }))
}

impl ScramClient {
    /// `user` must need no escaping (the generator's user names are `[a-z0-9]`).
    pub fn new(user: &str, nonce: String) -> anyhow::Result<Self> {
        ensure!(
            !user.is_empty() && !user.contains([',', '=']),
            "user names with ',' or '=' need escaping, which this client does not do"
        );
        Ok(Self {
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            expected_server_signature: None,
        })
    }

    /// The `client-first-message`, to send in `<auth/>`.
    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.client_first_bare)
    }

    /// The salt and iteration count the server asks for (to look the salted password up).
    pub fn read_server_first(&self, message: &str) -> anyhow::Result<ServerFirst> {
        Ok(parse_server_first(message, &self.nonce)?.1)
    }

    /// Given `server-first-message` and `Hi(password, salt, i)` for the salt and count it
    /// names, the `client-final-message` with the proof.
    pub fn client_final(&mut self, server_first: &str, salted: &[u8]) -> anyhow::Result<String> {
        let (nonce, _) = parse_server_first(server_first, &self.nonce)?;
        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = hmac(salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()).to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks `server-final-message`: the server proved it knows the account's ServerKey.
    pub fn verify_server_final(&self, message: &str) -> anyhow::Result<()> {
        let Some(expected) = &self.expected_server_signature else {
            bail!("server-final-message before client-final-message");
        };
        if let Some(error) = message.strip_prefix("e=") {
            bail!("the server refused the proof: {error}");
        }
        let signature = message
            .strip_prefix("v=")
            .with_context(|| format!("server-final-message has no verifier: {message:?}"))?;
        let signature = B64
            .decode(signature)
            .context("the verifier is not base64")?;
        ensure!(
            signature == *expected,
            "the server's signature is wrong: it does not know this account's keys"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn the_exchange_matches_the_rfc_7677_example() {
        let mut client = ScramClient::new("user", NONCE.into()).unwrap();
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let asked = client.read_server_first(SERVER_FIRST).unwrap();
        assert_eq!(asked.iterations, 4096);
        let salted = salted_password("pencil", &asked.salt, asked.iterations);
        assert_eq!(
            client.client_final(SERVER_FIRST, &salted).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client
            .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn a_server_that_does_not_know_the_keys_is_caught() {
        let mut client = ScramClient::new("user", NONCE.into()).unwrap();
        let salted = salted_password(
            "not pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        client.client_final(SERVER_FIRST, &salted).unwrap();
        assert!(
            client
                .verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(client.verify_server_final("e=invalid-proof").is_err());
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let client = ScramClient::new("user", NONCE.into()).unwrap();
        assert!(
            client
                .read_server_first("r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                .is_err()
        );
        assert!(
            client
                .read_server_first(&format!("r={NONCE},s=AAAA,i=4096"))
                .is_err()
        );
        assert!(
            client
                .read_server_first(&format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=100"))
                .is_err()
        );
    }
}
