//! SCRAM-SHA-256 (RFC 5802, RFC 7677), client side, without I/O and without channel
//! binding (GS2 header `n,,`): the prober authenticates with it.
//!
//! ```text
//!  ScramClient::new(user, nonce) ─► client_first()             ─► <auth/>
//!  <challenge/> ─► read_server_first(msg) → salt, iterations
//!               ─► salted_password(password, salt, iterations)  (PBKDF2: the slow step)
//!               ─► client_final(salted)                         ─► <response/>
//!  <success/>   ─► verify_server_final(msg)   (the server proves it knows the account)
//! ```
//!
//! The server is not trusted: its nonce must extend ours, its iteration count must lie
//! between RFC 7677's minimum and [`MAX_ITERATIONS`] (PBKDF2 runs on our CPU), and its
//! final signature must be the one only a holder of the account's keys can compute.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The GS2 header of a client that does not support channel binding.
const GS2_HEADER: &str = "n,,";

/// RFC 7677 §4: at least 4096 iterations for SCRAM-SHA-256.
pub const MIN_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations the prober computes for one login; a server asking for more
/// could make each probe burn seconds of CPU that no timeout can take back.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Why the exchange cannot go on; the message is what a probe result shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM server-first-message: {0}")]
    MalformedServerFirst(&'static str),
    #[error("the server's SCRAM nonce does not extend ours")]
    NonceMismatch,
    #[error(
        "the server asks for {0} SCRAM iterations (allowed: {MIN_ITERATIONS} to {MAX_ITERATIONS})"
    )]
    Iterations(u32),
    #[error("the server refused the SCRAM proof: {0}")]
    ServerError(String),
    #[error("malformed SCRAM server-final-message")]
    MalformedServerFinal,
    #[error("the server's SCRAM signature is wrong: it does not know this account's keys")]
    WrongServerSignature,
    #[error("SCRAM messages out of order")]
    OutOfOrder,
}

/// What `server-first-message` asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst {
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// One SCRAM-SHA-256 exchange, from `client-first-message` to the server's signature.
#[derive(Debug)]
pub struct ScramClient {
    client_nonce: String,
    client_first_bare: String,
    /// `server-first-message` and the combined nonce, once read.
    server_first: Option<(String, String)>,
    /// The `ServerSignature` the server must send, once the proof is computed.
    expected_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// Starts an exchange for `username` with the client nonce `nonce` (printable ASCII
    /// without `,`; [`new_nonce`] makes one).
    pub fn new(username: &str, nonce: String) -> Self {
        Self {
            client_first_bare: format!("n={},r={nonce}", escape_saslname(username)),
            client_nonce: nonce,
            server_first: None,
            expected_signature: None,
        }
    }

    /// The `client-first-message`, sent in `<auth/>`.
    pub fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.client_first_bare)
    }

    /// Reads `server-first-message` (RFC 5802 §7) and returns the salt and iteration count
    /// the salted password must be computed with.
    pub fn read_server_first(&mut self, message: &str) -> Result<ServerFirst, ScramError> {
        use ScramError::MalformedServerFirst as Malformed;
        if message.starts_with("m=") {
            return Err(Malformed("it demands an extension"));
        }
        let mut parts = message.split(',');
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(Malformed("no nonce"))?;
        let salt = parts
            .next()
            .and_then(|p| p.strip_prefix("s="))
            .ok_or(Malformed("no salt"))?;
        let iterations = parts
            .next()
            .and_then(|p| p.strip_prefix("i="))
            .ok_or(Malformed("no iteration count"))?;
        // Optional extensions may follow; RFC 5802 says to ignore the ones we do not know.
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        if !nonce.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Malformed("the nonce is not printable"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| Malformed("the salt is not base64"))?;
        if salt.is_empty() {
            return Err(Malformed("the salt is empty"));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| Malformed("the iteration count is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        self.server_first = Some((message.to_string(), nonce.to_string()));
        Ok(ServerFirst { salt, iterations })
    }

    /// The `client-final-message` with the proof, given `Hi(password, salt, i)` for what
    /// the server asked ([`salted_password`]).
    pub fn client_final(&mut self, salted: &[u8; 32]) -> Result<String, ScramError> {
        let (server_first, nonce) = self.server_first.as_ref().ok_or(ScramError::OutOfOrder)?;
        let without_proof = format!("c={},r={nonce}", B64.encode(GS2_HEADER));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = hmac(salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(salted, b"Server Key");
        self.expected_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks `server-final-message`: `v=` must carry the expected server signature.
    pub fn verify_server_final(&self, message: &str) -> Result<(), ScramError> {
        let expected = self.expected_signature.ok_or(ScramError::OutOfOrder)?;
        let first = message.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(ScramError::ServerError(clip(error, 64)));
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::MalformedServerFinal)?;
        // Both values are public once sent; a plain comparison leaks nothing.
        if signature != expected {
            return Err(ScramError::WrongServerSignature);
        }
        Ok(())
    }
}

/// `Hi(password, salt, i)` of RFC 5802 with HMAC-SHA-256 (PBKDF2).
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// A fresh client nonce: 18 random bytes in base64 (24 printable characters, no `,`).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
    B64.encode(bytes)
}

/// RFC 5802 §5.1 `saslname`: `=` and `,` are written `=3D` and `=2C`.
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// At most `max` characters of untrusted text, printable ones only.
fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn through_client_final(password: &str) -> ScramClient {
        let mut client = ScramClient::new("user", CLIENT_NONCE.into());
        let asked = client.read_server_first(SERVER_FIRST).unwrap();
        let salted = salted_password(password.as_bytes(), &asked.salt, asked.iterations);
        client.client_final(&salted).unwrap();
        client
    }

    #[test]
    fn the_exchange_matches_the_rfc_7677_example() {
        let mut client = ScramClient::new("user", CLIENT_NONCE.into());
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let asked = client.read_server_first(SERVER_FIRST).unwrap();
        assert_eq!(asked.iterations, 4096);
        assert_eq!(B64.encode(&asked.salt), "W22ZaJ0SNY7soEsUEjb6gQ==");
        let salted = salted_password(b"pencil", &asked.salt, asked.iterations);
        assert_eq!(client.client_final(&salted).unwrap(), CLIENT_FINAL);
        assert_eq!(client.verify_server_final(SERVER_FINAL), Ok(()));
    }

    #[test]
    fn a_server_that_does_not_know_the_keys_is_caught() {
        let client = through_client_final("not pencil");
        assert_eq!(
            client.verify_server_final(SERVER_FINAL),
            Err(ScramError::WrongServerSignature)
        );
    }

    #[test]
    fn a_server_error_is_reported_with_its_name() {
        let client = through_client_final("pencil");
        assert_eq!(
            client.verify_server_final("e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
        assert_eq!(
            client.verify_server_final("x=1"),
            Err(ScramError::MalformedServerFinal)
        );
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let mut client = ScramClient::new("user", CLIENT_NONCE.into());
        let not_ours = client.read_server_first("r=other-nonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert_eq!(not_ours, Err(ScramError::NonceMismatch));
        let only_ours = client.read_server_first(&format!(
            "r={CLIENT_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        ));
        assert_eq!(only_ours, Err(ScramError::NonceMismatch));
    }

    #[test]
    fn iteration_counts_outside_the_allowed_range_are_refused() {
        for count in [100, 4_000_000_000] {
            let mut client = ScramClient::new("user", CLIENT_NONCE.into());
            let message = format!("r={CLIENT_NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={count}");
            assert_eq!(
                client.read_server_first(&message),
                Err(ScramError::Iterations(count))
            );
        }
    }

    #[test]
    fn malformed_server_first_messages_are_refused_and_extensions_ignored() {
        let mut client = ScramClient::new("user", CLIENT_NONCE.into());
        for message in [
            "m=ext,r=x,s=AAAA,i=4096",
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=not base64!,i=4096",
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
        ] {
            assert!(
                matches!(
                    client.read_server_first(message),
                    Err(ScramError::MalformedServerFirst(_))
                ),
                "{message}"
            );
        }
        let with_extension = format!("{SERVER_FIRST},x=later");
        assert!(client.read_server_first(&with_extension).is_ok());
    }

    #[test]
    fn messages_out_of_order_are_refused() {
        let mut client = ScramClient::new("user", CLIENT_NONCE.into());
        assert_eq!(client.client_final(&[0; 32]), Err(ScramError::OutOfOrder));
        assert_eq!(
            client.verify_server_final(SERVER_FINAL),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn user_names_with_commas_and_equals_signs_are_escaped() {
        let client = ScramClient::new("a=b,c", "n".into());
        assert_eq!(client.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }

    #[test]
    fn fresh_nonces_are_printable_and_differ() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_graphic() && c != b','));
    }
}
