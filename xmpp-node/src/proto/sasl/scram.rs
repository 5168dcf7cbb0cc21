//! SCRAM-SHA-1, SCRAM-SHA-256 and their `-PLUS` variants, server side (RFC 5802,
//! RFC 7677), with `tls-exporter` channel binding (RFC 9266).
//!
//! The exchange is two round trips, driven by [`ScramServer`] one message at a time:
//!
//! ```text
//!  client-first  n,,n=user,r=<cnonce>            ─► client_first ─► ClientFirst { username }
//!                           (the caller looks up the user's ScramCredentials, or finds none)
//!  server-first  r=<cnonce><snonce>,s=<salt>,i=<n> ◄─ server_first(Some(creds) | None)
//!  client-final  c=<gs2 header ‖ cb data>,r=…,p=<proof> ─► client_final ─► server-final
//!  server-final  v=<server signature>              ◄─ (proves the server knew ServerKey)
//! ```
//!
//! The node stores [`ScramCredentials`] (salt, iteration count, StoredKey, ServerKey),
//! never passwords. With them the server checks the client's proof — ClientKey is
//! recovered as `proof ⊕ HMAC(StoredKey, AuthMessage)` and must hash to StoredKey — and
//! signs the exchange with ServerKey. An unknown user is answered with a salt derived
//! from the user name under a per-process key, so it looks like any other account and
//! fails only at the last step, exactly as a wrong password does.
//!
//! Channel binding ties the exchange to the TLS connection: with a `-PLUS` mechanism the
//! client's `c=` must carry the TLS exporter bytes the server sees too, so a man in the
//! middle who terminates TLS cannot relay it. A client that could bind but believes the
//! server cannot says so with the `y` flag; if the server did offer `-PLUS`, someone
//! stripped the offer and the exchange fails (RFC 5802 §6).

use std::fmt;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use precis_profiles::OpaqueString;
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{Mechanism, SaslError, normalize_authcid};

/// The iteration count shown for unknown users unless
/// [`ScramServer::with_unknown_user_iterations`] says otherwise; also a sensible count for
/// new credentials (RFC 7677 §4 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length of the salts [`new_salt`] makes, and of the fake ones for unknown users.
pub(super) const SALT_LEN: usize = 16;

/// Random bytes in the server's part of the nonce (32 characters once in base64).
const SERVER_NONCE_LEN: usize = 24;

/// The only channel-binding type the node supports (RFC 9266).
const TLS_EXPORTER: &str = "tls-exporter";

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1 (SCRAM-SHA-1, RFC 5802).
    Sha1,
    /// SHA-256 (SCRAM-SHA-256, RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The output length in bytes: the length of StoredKey, ServerKey and the proof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, SaslError> {
        // HMAC takes keys of any length, so these errors cannot happen; they are mapped
        // rather than unwrapped.
        Ok(match self {
            ScramHash::Sha1 => {
                let mut mac = Hmac::<Sha1>::new_from_slice(key)
                    .map_err(|_| SaslError::TemporaryAuthFailure)?;
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key)
                    .map_err(|_| SaslError::TemporaryAuthFailure)?;
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        })
    }

    /// `Hi(password, salt, i)` of RFC 5802 §2.2, which is PBKDF2 with HMAC.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// What the node stores per account and hash: enough to verify a client and to prove
/// itself, not enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The hash these keys belong to.
    pub hash: ScramHash,
    /// The salt of `Hi`.
    pub salt: Vec<u8>,
    /// The iteration count of `Hi`.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("hash", &self.hash)
            .field("salt", &B64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Derives the stored credentials from a password (RFC 5802 §3). The password is first
/// normalised with PRECIS OpaqueString (RFC 8265 §4, which replaces SASLprep); a password
/// it refuses (empty, control characters…) is `not-authorized`. Zero iterations are a
/// server fault, `temporary-auth-failure`.
pub fn derive_credentials(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramCredentials, SaslError> {
    if iterations == 0 {
        return Err(SaslError::TemporaryAuthFailure);
    }
    let password = OpaqueString::enforce(password).map_err(|_| SaslError::NotAuthorized)?;
    let salted_password = hash.salted_password(password.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted_password, b"Client Key")?;
    Ok(ScramCredentials {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: hash.digest(&client_key),
        server_key: hash.hmac(&salted_password, b"Server Key")?,
    })
}

/// A fresh random salt of 16 bytes for [`derive_credentials`].
///
/// # Panics
///
/// If the operating system has no randomness to give, which on the platforms the node
/// runs on means it is broken; a predictable salt would be worse than stopping.
pub fn new_salt() -> Vec<u8> {
    let mut salt = vec![0u8; SALT_LEN];
    getrandom::fill(&mut salt).expect("the operating system's random number generator failed");
    salt
}

/// Channel binding as the server sees it, chosen from the mechanism the client picked
/// and what this connection offers (see [`ScramServer::for_mechanism`]).
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// The server offers no `-PLUS` mechanisms (no TLS, or no exporter): `n` and `y` are
    /// both fine.
    None,
    /// The server offered `-PLUS` mechanisms but the client picked one without: `n` is
    /// fine, `y` means the offer was stripped on the way (a downgrade) and fails.
    Offered,
    /// The client picked a `-PLUS` mechanism. Holds this connection's `tls-exporter`
    /// bytes (RFC 9266: label "EXPORTER-Channel-Binding", no context, 32 bytes), which
    /// the client must send back as `c=base64(gs2-header ‖ bytes)`.
    TlsExporter(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelBinding::None => f.write_str("None"),
            ChannelBinding::Offered => f.write_str("Offered"),
            // Keying material derived from the TLS secrets stays out of logs.
            ChannelBinding::TlsExporter(_) => f.write_str("TlsExporter(..)"),
        }
    }
}

/// What the client's first message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity (`n=`), unescaped and normalised as a JID localpart.
    pub username: String,
    /// The authorization identity (`a=`), unescaped, if the client named one. In XMPP it
    /// is a JID; the caller decides whether this user may act as it.
    pub authzid: Option<String>,
}

/// The server side of one SCRAM exchange. Call [`client_first`](Self::client_first),
/// [`server_first`](Self::server_first) and [`client_final`](Self::client_final) in that
/// order; any error ends the exchange, and later calls fail with `malformed-request`.
pub struct ScramServer {
    hash: ScramHash,
    channel_binding: ChannelBinding,
    /// Replaces the random server nonce, for the RFC test vectors.
    fixed_server_nonce: Option<String>,
    /// The iteration count shown for an unknown user.
    unknown_user_iterations: u32,
    state: State,
}

enum State {
    AwaitingClientFirst,
    ReceivedClientFirst(Exchange),
    SentServerFirst {
        exchange: Exchange,
        server_first: String,
        keys: Keys,
    },
    Finished,
}

/// What the client-first message fixed for the rest of the exchange.
struct Exchange {
    /// `n,,` / `y,,` / `p=tls-exporter,a=…,`: the client must repeat it in `c=`.
    gs2_header: String,
    /// The client-first message without the GS2 header, as sent: part of AuthMessage.
    client_first_bare: String,
    /// Client nonce followed by server nonce.
    nonce: String,
    /// Salt and StoredKey to use if the user turns out not to exist.
    fake_salt: Vec<u8>,
    fake_stored_key: Vec<u8>,
}

struct Keys {
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    /// False for the fake keys of an unknown user: the proof can never be accepted.
    known_user: bool,
}

/// The GS2 channel-binding flag of the client-first message (RFC 5802 §7).
enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    NotUsed,
    /// `p=<type>`: the client binds with this type.
    Used(&'a str),
}

impl ScramServer {
    /// A new exchange for the SCRAM mechanism with this hash.
    pub fn new(hash: ScramHash, channel_binding: ChannelBinding) -> Self {
        Self {
            hash,
            channel_binding,
            fixed_server_nonce: None,
            unknown_user_iterations: DEFAULT_ITERATIONS,
            state: State::AwaitingClientFirst,
        }
    }

    /// Shows `iterations` to unknown users instead of [`DEFAULT_ITERATIONS`]: pass the
    /// count the store derives new credentials with, so that unknown users look like real
    /// ones.
    pub fn with_unknown_user_iterations(mut self, iterations: u32) -> Self {
        self.unknown_user_iterations = iterations;
        self
    }

    /// A new exchange for the mechanism the client picked, given this connection's
    /// `tls-exporter` bytes (`None` without TLS or exporter, i.e. when no `-PLUS` was
    /// offered). PLAIN, or `-PLUS` without exporter bytes, is `invalid-mechanism`.
    pub fn for_mechanism(
        mechanism: Mechanism,
        tls_exporter: Option<Vec<u8>>,
    ) -> Result<Self, SaslError> {
        let hash = mechanism.scram_hash().ok_or(SaslError::InvalidMechanism)?;
        let channel_binding = match (mechanism.is_plus(), tls_exporter) {
            (true, Some(bytes)) => ChannelBinding::TlsExporter(bytes),
            (true, None) => return Err(SaslError::InvalidMechanism),
            (false, Some(_)) => ChannelBinding::Offered,
            (false, None) => ChannelBinding::None,
        };
        Ok(Self::new(hash, channel_binding))
    }

    /// An exchange whose server nonce is `nonce`, to reproduce published examples.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(
        hash: ScramHash,
        channel_binding: ChannelBinding,
        nonce: &str,
    ) -> Self {
        Self {
            fixed_server_nonce: Some(nonce.to_owned()),
            ..Self::new(hash, channel_binding)
        }
    }

    /// Reads the client-first message (the initial response of `<auth/>`): checks the
    /// grammar and the channel-binding flag against what the server offered, and returns
    /// who the client says it is, so the caller can look up the credentials.
    pub fn client_first(&mut self, message: &[u8]) -> Result<ClientFirst, SaslError> {
        let State::AwaitingClientFirst = std::mem::replace(&mut self.state, State::Finished) else {
            return Err(SaslError::MalformedRequest);
        };
        let message = text(message)?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = message.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let (authzid, client_first_bare) =
            rest.split_once(',').ok_or(SaslError::MalformedRequest)?;
        let gs2_header = &message[..message.len() - client_first_bare.len()];
        let flag = match flag {
            "n" => CbindFlag::NotSupported,
            "y" => CbindFlag::NotUsed,
            _ => match flag.strip_prefix("p=") {
                Some(name) if is_cb_name(name) => CbindFlag::Used(name),
                _ => return Err(SaslError::MalformedRequest),
            },
        };
        let authzid = match authzid {
            "" => None,
            _ => match authzid.strip_prefix("a=") {
                Some(name) => Some(decode_saslname(name)?),
                None => return Err(SaslError::MalformedRequest),
            },
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attributes = client_first_bare.split(',');
        let username = decode_saslname(expect_attribute(attributes.next(), 'n')?)?;
        let client_nonce = expect_attribute(attributes.next(), 'r')?;
        if !is_nonce(client_nonce) {
            return Err(SaslError::MalformedRequest);
        }
        check_extensions(attributes)?;

        self.check_channel_binding_flag(&flag)?;
        let username = normalize_authcid(&username)?;

        let server_nonce = match &self.fixed_server_nonce {
            Some(nonce) => nonce.clone(),
            None => {
                let mut bytes = [0u8; SERVER_NONCE_LEN];
                getrandom::fill(&mut bytes).map_err(|_| SaslError::TemporaryAuthFailure)?;
                B64.encode(bytes)
            }
        };
        let (fake_salt, fake_stored_key) = self.fake_credentials(&username)?;
        self.state = State::ReceivedClientFirst(Exchange {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: client_first_bare.to_owned(),
            nonce: format!("{client_nonce}{server_nonce}"),
            fake_salt,
            fake_stored_key,
        });
        Ok(ClientFirst { username, authzid })
    }

    /// Writes the server-first message (the `<challenge/>`), given the user's stored
    /// credentials, or `None` if there is no such user — or none for this hash: the
    /// message then carries a fake salt that is stable per user name and the iteration
    /// count for unknown users, and [`client_final`](Self::client_final) will fail with
    /// `not-authorized` like a wrong password.
    ///
    /// Called out of order it returns an empty message and ends the exchange.
    pub fn server_first(&mut self, credentials: Option<&ScramCredentials>) -> Vec<u8> {
        let State::ReceivedClientFirst(exchange) =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Vec::new();
        };
        let credentials = credentials.filter(|c| c.hash == self.hash);
        let (salt, iterations, keys) = match credentials {
            Some(c) => (
                c.salt.as_slice(),
                c.iterations,
                Keys {
                    stored_key: c.stored_key.clone(),
                    server_key: c.server_key.clone(),
                    known_user: true,
                },
            ),
            None => (
                exchange.fake_salt.as_slice(),
                self.unknown_user_iterations,
                Keys {
                    stored_key: exchange.fake_stored_key.clone(),
                    server_key: Vec::new(),
                    known_user: false,
                },
            ),
        };
        let server_first = format!("r={},s={},i={iterations}", exchange.nonce, B64.encode(salt));
        let message = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            exchange,
            server_first,
            keys,
        };
        message
    }

    /// Reads the client-final message (the `<response/>`): checks the channel binding,
    /// the nonce and the proof, and returns the server-final message `v=…` to send in
    /// `<success/>`. A wrong proof, an unknown user, a nonce or channel-binding mismatch
    /// are all `not-authorized`.
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::SentServerFirst {
            exchange,
            server_first,
            keys,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(SaslError::MalformedRequest);
        };
        let message = text(message)?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = message
            .rsplit_once(',')
            .ok_or(SaslError::MalformedRequest)?;
        let proof = expect_attribute(Some(proof), 'p')?;
        let proof = B64
            .decode(proof)
            .map_err(|_| SaslError::IncorrectEncoding)?;
        let mut attributes = without_proof.split(',');
        let cbind_data = expect_attribute(attributes.next(), 'c')?;
        let cbind_data = B64
            .decode(cbind_data)
            .map_err(|_| SaslError::IncorrectEncoding)?;
        let nonce = expect_attribute(attributes.next(), 'r')?;
        check_extensions(attributes)?;
        if proof.len() != self.hash.output_len() {
            return Err(SaslError::MalformedRequest);
        }

        let mut expected_cbind = exchange.gs2_header.as_bytes().to_vec();
        if let ChannelBinding::TlsExporter(bytes) = &self.channel_binding {
            expected_cbind.extend_from_slice(bytes);
        }
        if !bool::from(cbind_data.ct_eq(&expected_cbind)) || nonce != exchange.nonce {
            return Err(SaslError::NotAuthorized);
        }

        let auth_message = format!(
            "{},{server_first},{without_proof}",
            exchange.client_first_bare
        );
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes())?;
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_matches = self.hash.digest(&client_key).ct_eq(&keys.stored_key);
        if !bool::from(proof_matches & Choice::from(u8::from(keys.known_user))) {
            return Err(SaslError::NotAuthorized);
        }

        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes())?;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    fn check_channel_binding_flag(&self, flag: &CbindFlag<'_>) -> Result<(), SaslError> {
        match (&self.channel_binding, flag) {
            // Only tls-exporter: tls-unique is unsafe with TLS 1.3 resumption and
            // tls-server-end-point binds only the certificate.
            (ChannelBinding::TlsExporter(_), CbindFlag::Used(name)) if *name == TLS_EXPORTER => {
                Ok(())
            }
            (ChannelBinding::TlsExporter(_), CbindFlag::Used(_)) => Err(SaslError::NotAuthorized),
            // A -PLUS mechanism without binding, or binding with a mechanism without it.
            (ChannelBinding::TlsExporter(_), _) | (_, CbindFlag::Used(_)) => {
                Err(SaslError::MalformedRequest)
            }
            (ChannelBinding::Offered, CbindFlag::NotUsed) => Err(SaslError::NotAuthorized),
            (ChannelBinding::Offered | ChannelBinding::None, CbindFlag::NotSupported)
            | (ChannelBinding::None, CbindFlag::NotUsed) => Ok(()),
        }
    }

    /// The salt and StoredKey shown for a user who does not exist: HMACs of the user name
    /// under a key drawn once per process, so they are the same on every attempt (a
    /// changing salt would give the absence away) yet unpredictable from outside. The salt
    /// does not depend on the hash, as real accounts share one salt across hashes.
    fn fake_credentials(&self, username: &str) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
        let key = process_key()?;
        let salt_input = format!("rookery scram salt\0{username}");
        let mut salt = ScramHash::Sha256.hmac(key, salt_input.as_bytes())?;
        salt.truncate(SALT_LEN);
        let key_input = format!("rookery scram stored key\0{}\0{username}", self.hash.name());
        let mut stored_key = ScramHash::Sha256.hmac(key, key_input.as_bytes())?;
        stored_key.truncate(self.hash.output_len());
        Ok((salt, stored_key))
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::ReceivedClientFirst(_) => "received client-first",
            State::SentServerFirst { .. } => "sent server-first",
            State::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("channel_binding", &self.channel_binding)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The random key behind the fake credentials of unknown users, drawn on first use.
fn process_key() -> Result<&'static [u8; 32], SaslError> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| SaslError::TemporaryAuthFailure)?;
    Ok(KEY.get_or_init(|| key))
}

/// SCRAM messages are UTF-8 without NUL (RFC 5802 §7, `value-char`).
fn text(message: &[u8]) -> Result<&str, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest)?;
    if text.contains('\0') {
        return Err(SaslError::MalformedRequest);
    }
    Ok(text)
}

/// The value of `name=value`, which must be the attribute `name`. A mandatory extension
/// (`m=`) where `name` was expected is refused too: the node implements none.
fn expect_attribute(part: Option<&str>, name: char) -> Result<&str, SaslError> {
    let part = part.ok_or(SaslError::MalformedRequest)?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(n), Some('=')) if n == name => Ok(chars.as_str()),
        _ => Err(SaslError::MalformedRequest),
    }
}

/// Optional extensions (`x=value`) are ignored as RFC 5802 §5 asks; anything that is not
/// an attribute, or `m=`, is refused.
fn check_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), SaslError> {
    for part in parts {
        let bytes = part.as_bytes();
        let is_attribute = bytes.len() > 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=';
        if !is_attribute || bytes[0] == b'm' {
            return Err(SaslError::MalformedRequest);
        }
    }
    Ok(())
}

/// Decodes a `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error
/// (RFC 5802 §5.1), as is an empty name.
fn decode_saslname(encoded: &str) -> Result<String, SaslError> {
    if encoded.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    let mut decoded = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3);
        match escape {
            Some("2C") => decoded.push(','),
            Some("3D") => decoded.push('='),
            _ => return Err(SaslError::MalformedRequest),
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// `printable` characters except `,` (RFC 5802 §7), at least one.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// `cb-name = 1*(ALPHA / DIGIT / "." / "-")` (RFC 5056 §7).
fn is_cb_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The client side of SCRAM for tests of this module and of the stream negotiation.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The client side of the exchange, enough to drive the server: the client-final
    /// message for `password`, given the bare client-first and the server-first.
    pub(crate) fn client_final_message(
        hash: ScramHash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind: &[u8],
    ) -> String {
        let mut attributes = server_first.split(',');
        let nonce = attributes.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(attributes.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = attributes
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted_password = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted_password, b"Client Key").unwrap();
        let stored_key = hash.digest(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hash.hmac(&stored_key, auth_message.as_bytes()).unwrap();
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::client_final_message;
    use super::*;

    /// RFC 5802 §5: SCRAM-SHA-1, user "user", password "pencil".
    const SHA1_SALT: &str = "QSXCR+Q6sek8bf92";
    const SHA1_CLIENT_FIRST: &str = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
    const SHA1_SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
    const SHA1_SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    const SHA1_CLIENT_FINAL: &str =
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    const SHA1_SERVER_FINAL: &str = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";

    /// RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil".
    const SHA256_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SHA256_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SHA256_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SHA256_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const SHA256_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SHA256_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// Few iterations keep the tests fast; the RFC vectors use their own 4096.
    const TEST_ITERATIONS: u32 = 16;
    const EXPORTER: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn creds(hash: ScramHash, password: &str) -> ScramCredentials {
        derive_credentials(hash, password, b"a sixteen b salt", TEST_ITERATIONS).unwrap()
    }

    /// Runs a whole exchange; returns the result of the last step.
    fn authenticate(
        server: &mut ScramServer,
        stored: Option<&ScramCredentials>,
        client_first: &str,
        password: &str,
        cbind: &[u8],
    ) -> Result<Vec<u8>, SaslError> {
        server.client_first(client_first.as_bytes())?;
        let server_first = String::from_utf8(server.server_first(stored)).unwrap();
        let bare = client_first.splitn(3, ',').nth(2).unwrap();
        let hash = server.hash;
        let client_final = client_final_message(hash, password, bare, &server_first, cbind);
        server.client_final(client_final.as_bytes())
    }

    #[test]
    fn the_rfc_5802_sha1_example_gives_the_rfc_messages() {
        let salt = B64.decode(SHA1_SALT).unwrap();
        let stored = derive_credentials(ScramHash::Sha1, "pencil", &salt, 4096).unwrap();
        let mut server = ScramServer::with_server_nonce(
            ScramHash::Sha1,
            ChannelBinding::None,
            SHA1_SERVER_NONCE,
        );
        let first = server.client_first(SHA1_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".into(),
                authzid: None
            }
        );
        assert_eq!(
            server.server_first(Some(&stored)),
            SHA1_SERVER_FIRST.as_bytes()
        );
        assert_eq!(
            server.client_final(SHA1_CLIENT_FINAL.as_bytes()).unwrap(),
            SHA1_SERVER_FINAL.as_bytes()
        );
    }

    #[test]
    fn the_rfc_7677_sha256_example_gives_the_rfc_messages() {
        let salt = B64.decode(SHA256_SALT).unwrap();
        let stored = derive_credentials(ScramHash::Sha256, "pencil", &salt, 4096).unwrap();
        let mut server = ScramServer::with_server_nonce(
            ScramHash::Sha256,
            ChannelBinding::None,
            SHA256_SERVER_NONCE,
        );
        assert_eq!(
            server
                .client_first(SHA256_CLIENT_FIRST.as_bytes())
                .unwrap()
                .username,
            "user"
        );
        assert_eq!(
            server.server_first(Some(&stored)),
            SHA256_SERVER_FIRST.as_bytes()
        );
        assert_eq!(
            server.client_final(SHA256_CLIENT_FINAL.as_bytes()).unwrap(),
            SHA256_SERVER_FINAL.as_bytes()
        );
    }

    #[test]
    fn the_test_client_reproduces_the_rfc_7677_client_final() {
        let bare = &SHA256_CLIENT_FIRST[3..];
        let message = client_final_message(
            ScramHash::Sha256,
            "pencil",
            bare,
            SHA256_SERVER_FIRST,
            b"n,,",
        );
        assert_eq!(message, SHA256_CLIENT_FINAL);
    }

    #[test]
    fn the_right_password_authenticates_with_both_hashes() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let stored = creds(hash, "secret");
            let mut server = ScramServer::new(hash, ChannelBinding::None);
            assert!(
                authenticate(
                    &mut server,
                    Some(&stored),
                    "n,,n=juliet,r=abc",
                    "secret",
                    b"n,,"
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn a_wrong_password_is_not_authorized() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let result = authenticate(
            &mut server,
            Some(&stored),
            "n,,n=juliet,r=abc",
            "Secret",
            b"n,,",
        );
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn an_unknown_user_gets_a_plausible_challenge_then_not_authorized() {
        let challenge = |user: &str| {
            let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
            server
                .client_first(format!("n,,n={user},r=abc").as_bytes())
                .unwrap();
            let server_first = String::from_utf8(server.server_first(None)).unwrap();
            let parts: Vec<&str> = server_first.split(',').collect();
            assert_eq!(parts.len(), 3);
            assert!(parts[0].starts_with("r=abc") && parts[0].len() == "r=abc".len() + 32);
            assert_eq!(
                B64.decode(parts[1].strip_prefix("s=").unwrap())
                    .unwrap()
                    .len(),
                SALT_LEN
            );
            assert_eq!(parts[2], format!("i={DEFAULT_ITERATIONS}"));
            parts[1].to_owned()
        };
        // The fake salt is the same on every attempt, and differs between users.
        assert_eq!(challenge("nobody"), challenge("Nobody"));
        assert_ne!(challenge("nobody"), challenge("someone"));

        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let result = authenticate(&mut server, None, "n,,n=nobody,r=abc", "anything", b"n,,");
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn an_unknown_user_sees_one_salt_for_both_hashes_and_the_configured_iterations() {
        let challenge = |hash| {
            let mut server =
                ScramServer::new(hash, ChannelBinding::None).with_unknown_user_iterations(8192);
            server.client_first(b"n,,n=nobody,r=abc").unwrap();
            let server_first = String::from_utf8(server.server_first(None)).unwrap();
            server_first.split_once(',').unwrap().1.to_owned()
        };
        assert_eq!(challenge(ScramHash::Sha1), challenge(ScramHash::Sha256));
        assert!(challenge(ScramHash::Sha1).ends_with(",i=8192"));
    }

    #[test]
    fn credentials_for_another_hash_count_as_an_unknown_user() {
        let stored = creds(ScramHash::Sha1, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let result = authenticate(
            &mut server,
            Some(&stored),
            "n,,n=juliet,r=abc",
            "secret",
            b"n,,",
        );
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn plus_with_the_right_exporter_bytes_succeeds() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(
            ScramHash::Sha256,
            ChannelBinding::TlsExporter(EXPORTER.to_vec()),
        );
        let cbind = [&b"p=tls-exporter,,"[..], EXPORTER].concat();
        let result = authenticate(
            &mut server,
            Some(&stored),
            "p=tls-exporter,,n=juliet,r=abc",
            "secret",
            &cbind,
        );
        assert!(result.is_ok());
    }

    #[test]
    fn plus_with_other_exporter_bytes_is_not_authorized() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(
            ScramHash::Sha256,
            ChannelBinding::TlsExporter(EXPORTER.to_vec()),
        );
        let cbind = [
            &b"p=tls-exporter,,"[..],
            b"another connection's 32 bytes...",
        ]
        .concat();
        let result = authenticate(
            &mut server,
            Some(&stored),
            "p=tls-exporter,,n=juliet,r=abc",
            "secret",
            &cbind,
        );
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn plus_with_only_the_gs2_header_in_c_is_not_authorized() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(
            ScramHash::Sha256,
            ChannelBinding::TlsExporter(EXPORTER.to_vec()),
        );
        let result = authenticate(
            &mut server,
            Some(&stored),
            "p=tls-exporter,,n=juliet,r=abc",
            "secret",
            b"p=tls-exporter,,",
        );
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn plus_without_a_binding_flag_is_malformed() {
        for client_first in ["n,,n=juliet,r=abc", "y,,n=juliet,r=abc"] {
            let mut server = ScramServer::new(
                ScramHash::Sha256,
                ChannelBinding::TlsExporter(EXPORTER.to_vec()),
            );
            assert_eq!(
                server.client_first(client_first.as_bytes()),
                Err(SaslError::MalformedRequest)
            );
        }
    }

    #[test]
    fn channel_binding_types_other_than_tls_exporter_are_refused() {
        for cb_type in ["tls-unique", "tls-server-end-point"] {
            let mut server = ScramServer::new(
                ScramHash::Sha256,
                ChannelBinding::TlsExporter(EXPORTER.to_vec()),
            );
            let client_first = format!("p={cb_type},,n=juliet,r=abc");
            assert_eq!(
                server.client_first(client_first.as_bytes()),
                Err(SaslError::NotAuthorized)
            );
        }
    }

    #[test]
    fn the_y_flag_when_plus_was_offered_is_a_downgrade_and_fails() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::Offered);
        assert_eq!(
            server.client_first(b"y,,n=juliet,r=abc"),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn the_y_flag_when_no_plus_was_offered_succeeds() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert!(
            authenticate(
                &mut server,
                Some(&stored),
                "y,,n=juliet,r=abc",
                "secret",
                b"y,,"
            )
            .is_ok()
        );
    }

    #[test]
    fn the_n_flag_when_plus_was_offered_succeeds() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::Offered);
        assert!(
            authenticate(
                &mut server,
                Some(&stored),
                "n,,n=juliet,r=abc",
                "secret",
                b"n,,"
            )
            .is_ok()
        );
    }

    #[test]
    fn the_p_flag_with_a_mechanism_without_binding_is_malformed() {
        for binding in [ChannelBinding::None, ChannelBinding::Offered] {
            let mut server = ScramServer::new(ScramHash::Sha256, binding);
            assert_eq!(
                server.client_first(b"p=tls-exporter,,n=juliet,r=abc"),
                Err(SaslError::MalformedRequest)
            );
        }
    }

    #[test]
    fn c_must_repeat_the_gs2_header_exactly() {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let result = authenticate(
            &mut server,
            Some(&stored),
            "y,,n=juliet,r=abc",
            "secret",
            b"n,,",
        );
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn the_authzid_is_unescaped_and_bound_into_the_gs2_header() {
        let stored = creds(ScramHash::Sha256, "secret");
        let client_first = "n,a=juliet@example.com,n=juliet,r=abc";
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let first = server.client_first(client_first.as_bytes()).unwrap();
        assert_eq!(first.authzid.as_deref(), Some("juliet@example.com"));

        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let cbind = b"n,a=juliet@example.com,";
        assert!(authenticate(&mut server, Some(&stored), client_first, "secret", cbind).is_ok());
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let result = authenticate(&mut server, Some(&stored), client_first, "secret", b"n,,");
        assert_eq!(result, Err(SaslError::NotAuthorized));
    }

    #[test]
    fn escaped_comma_and_equals_in_the_user_name_are_decoded() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        let first = server
            .client_first(b"n,a=a=2Cb=3Dc,n=Rom=2Ceo=3D,r=abc")
            .unwrap();
        assert_eq!(first.username, "rom,eo=");
        assert_eq!(first.authzid.as_deref(), Some("a,b=c"));
    }

    #[test]
    fn an_escaped_user_name_authenticates_against_its_decoded_account() {
        let stored = creds(ScramHash::Sha1, "secret");
        let mut server = ScramServer::new(ScramHash::Sha1, ChannelBinding::None);
        assert!(
            authenticate(
                &mut server,
                Some(&stored),
                "n,,n=a=2Cb=3D,r=abc",
                "secret",
                b"n,,"
            )
            .is_ok()
        );
    }

    #[test]
    fn an_equals_sign_not_followed_by_2c_or_3d_is_malformed() {
        for name in ["a=b", "a=", "a=2c", "=3", "a=2Dz"] {
            let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
            let message = format!("n,,n={name},r=abc");
            assert_eq!(
                server.client_first(message.as_bytes()),
                Err(SaslError::MalformedRequest),
                "{name}"
            );
        }
    }

    #[test]
    fn a_user_name_that_cannot_be_a_localpart_is_not_authorized() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert_eq!(
            server.client_first(b"n,,n=jul@iet,r=abc"),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn the_user_name_is_case_folded() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert_eq!(
            server.client_first(b"n,,n=Juliet,r=abc").unwrap().username,
            "juliet"
        );
    }

    #[test]
    fn malformed_client_first_messages_are_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=juliet,r=abc",
            b"p=,,n=juliet,r=abc",
            b"p=tls exporter,,n=juliet,r=abc",
            b"n,juliet,n=juliet,r=abc",
            b"n,a=,n=juliet,r=abc",
            b"n,,r=abc,n=juliet",
            b"n,,n=juliet",
            b"n,,n=,r=abc",
            b"n,,n=juliet,r=",
            b"n,,n=juliet,r=a b",
            b"n,,m=ext,n=juliet,r=abc",
            b"n,,n=juliet,r=abc,m=ext",
            b"n,,n=juliet,r=abc,garbage",
            b"n,,n=juliet,r=abc,x=",
            b"n,,n=jul\0iet,r=abc",
            b"n,,n=jul\xffiet,r=abc",
            b"F,n,,n=juliet,r=abc",
        ];
        for message in cases {
            let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
            assert_eq!(
                server.client_first(message),
                Err(SaslError::MalformedRequest),
                "{message:?}"
            );
        }
    }

    #[test]
    fn optional_extensions_are_ignored() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert!(
            server
                .client_first(b"n,,n=juliet,r=abc,x=something")
                .is_ok()
        );
    }

    /// A server that has sent its server-first for "juliet" with password "secret", and
    /// the client-final a real client would answer.
    fn challenged() -> (ScramServer, String) {
        let stored = creds(ScramHash::Sha256, "secret");
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        server.client_first(b"n,,n=juliet,r=abc").unwrap();
        let server_first = String::from_utf8(server.server_first(Some(&stored))).unwrap();
        let client_final = client_final_message(
            ScramHash::Sha256,
            "secret",
            "n=juliet,r=abc",
            &server_first,
            b"n,,",
        );
        (server, client_final)
    }

    #[test]
    fn the_challenged_test_server_accepts_the_honest_answer() {
        let (mut server, client_final) = challenged();
        assert!(server.client_final(client_final.as_bytes()).is_ok());
    }

    #[test]
    fn a_client_final_with_another_nonce_is_not_authorized() {
        let (mut server, client_final) = challenged();
        let tampered = client_final.replacen(",r=abc", ",r=abd", 1);
        assert_eq!(
            server.client_final(tampered.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn a_proof_that_is_not_base64_is_incorrect_encoding() {
        let (mut server, client_final) = challenged();
        let (without_proof, _) = client_final.rsplit_once(',').unwrap();
        let message = format!("{without_proof},p=not*base64");
        assert_eq!(
            server.client_final(message.as_bytes()),
            Err(SaslError::IncorrectEncoding)
        );
    }

    #[test]
    fn channel_binding_data_that_is_not_base64_is_incorrect_encoding() {
        let (mut server, client_final) = challenged();
        let message = client_final.replacen("c=biws", "c=bi!ws", 1);
        assert_eq!(
            server.client_final(message.as_bytes()),
            Err(SaslError::IncorrectEncoding)
        );
    }

    #[test]
    fn a_proof_of_the_wrong_length_is_malformed() {
        let (mut server, client_final) = challenged();
        let (without_proof, _) = client_final.rsplit_once(',').unwrap();
        let message = format!("{without_proof},p={}", B64.encode([0u8; 20]));
        assert_eq!(
            server.client_final(message.as_bytes()),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn malformed_client_final_messages_are_refused() {
        let (_, honest) = challenged();
        let (without_proof, proof) = honest.rsplit_once(',').unwrap();
        let nonce = without_proof.split(',').nth(1).unwrap();
        let cases = [
            String::new(),
            without_proof.to_owned(),
            format!("{nonce},{proof}"),
            format!("{nonce},c=biws,{proof}"),
            format!("c=biws,{proof}"),
            format!("{without_proof},m=ext,{proof}"),
            format!("{without_proof},{proof},x=after-proof"),
            format!("{without_proof},\0,{proof}"),
        ];
        for message in cases {
            let (mut server, _) = challenged();
            assert_eq!(
                server.client_final(message.as_bytes()),
                Err(SaslError::MalformedRequest),
                "{message:?}"
            );
        }
        let (mut server, _) = challenged();
        assert_eq!(
            server.client_final(b"c=biws,\xff"),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn steps_out_of_order_fail() {
        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert_eq!(
            server.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(SaslError::MalformedRequest)
        );

        let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
        assert!(server.server_first(None).is_empty());
        assert_eq!(
            server.client_first(b"n,,n=juliet,r=abc"),
            Err(SaslError::MalformedRequest)
        );

        let (mut server, client_final) = challenged();
        assert!(server.client_final(client_final.as_bytes()).is_ok());
        assert_eq!(
            server.client_final(client_final.as_bytes()),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn a_failed_step_ends_the_exchange() {
        let (mut server, client_final) = challenged();
        assert_eq!(
            server.client_final(b"garbage"),
            Err(SaslError::MalformedRequest)
        );
        assert_eq!(
            server.client_final(client_final.as_bytes()),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn server_nonces_are_random_base64_of_24_bytes() {
        let nonce = || {
            let mut server = ScramServer::new(ScramHash::Sha256, ChannelBinding::None);
            server.client_first(b"n,,n=juliet,r=abc").unwrap();
            let server_first = String::from_utf8(server.server_first(None)).unwrap();
            let nonce = server_first
                .split(',')
                .next()
                .unwrap()
                .strip_prefix("r=abc")
                .unwrap()
                .to_owned();
            assert_eq!(B64.decode(&nonce).unwrap().len(), SERVER_NONCE_LEN);
            nonce
        };
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn for_mechanism_picks_the_channel_binding_policy() {
        let exporter = Some(EXPORTER.to_vec());
        let server =
            ScramServer::for_mechanism(Mechanism::ScramSha256Plus, exporter.clone()).unwrap();
        assert_eq!(
            server.channel_binding,
            ChannelBinding::TlsExporter(EXPORTER.to_vec())
        );
        let server = ScramServer::for_mechanism(Mechanism::ScramSha1, exporter.clone()).unwrap();
        assert_eq!(
            (server.hash, server.channel_binding),
            (ScramHash::Sha1, ChannelBinding::Offered)
        );
        let server = ScramServer::for_mechanism(Mechanism::ScramSha256, None).unwrap();
        assert_eq!(server.channel_binding, ChannelBinding::None);
        assert!(ScramServer::for_mechanism(Mechanism::ScramSha1Plus, None).is_err());
        assert!(ScramServer::for_mechanism(Mechanism::Plain, exporter).is_err());
    }

    #[test]
    fn derived_credentials_depend_on_the_normalised_password() {
        let a = creds(ScramHash::Sha256, "pencil");
        assert_eq!(a.stored_key.len(), 32);
        assert_eq!(a.server_key.len(), 32);
        assert_ne!(a, creds(ScramHash::Sha256, "Pencil"));
        // OpaqueString maps non-ASCII spaces to ASCII space.
        assert_eq!(
            creds(ScramHash::Sha256, "a\u{3000}b"),
            creds(ScramHash::Sha256, "a b")
        );
        assert_eq!(creds(ScramHash::Sha1, "pencil").stored_key.len(), 20);
    }

    #[test]
    fn passwords_precis_refuses_and_zero_iterations_are_errors() {
        assert_eq!(
            derive_credentials(ScramHash::Sha256, "", b"salt", 16),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            derive_credentials(ScramHash::Sha256, "a\u{7}b", b"salt", 16),
            Err(SaslError::NotAuthorized)
        );
        assert_eq!(
            derive_credentials(ScramHash::Sha256, "pw", b"salt", 0),
            Err(SaslError::TemporaryAuthFailure)
        );
    }

    #[test]
    fn new_salts_are_16_random_bytes() {
        assert_eq!(new_salt().len(), 16);
        assert_ne!(new_salt(), new_salt());
    }

    #[test]
    fn debug_output_hides_keys_and_exporter_bytes() {
        let stored = creds(ScramHash::Sha256, "secret");
        let printed = format!("{stored:?}");
        assert!(!printed.contains("stored_key") && !printed.contains("server_key"));
        let server = ScramServer::new(
            ScramHash::Sha256,
            ChannelBinding::TlsExporter(EXPORTER.to_vec()),
        );
        assert!(!format!("{server:?}").contains("0123"));
    }
}
