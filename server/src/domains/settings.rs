//! A domain's settings page (`/o/{org_id}/domains/{domain_id}/settings`): whether people
//! may create accounts from their XMPP app (XEP-0077 in-band registration, off by
//! default), whom the domain talks with (federation: the whole network, an allow-list or
//! no other domain; [`super::federation`]), its XEP-0157 contact addresses and its own TLS
//! certificate. The domain page's rule applies: members of the domain's organisation,
//! owners or not; anyone else gets a 404.
//!
//! A post is checked whole by pure functions ([`parse_contacts`],
//! [`super::federation::check`], [`check_certificate`])
//! and nothing is saved unless all of it is right. A save stores the value (the
//! certificate's private key sealed under the panel's secret key, never shown again),
//! gives the domain a new generation and wakes the reconciler, which pushes the new spec
//! (`nodes::reconcile::spec_for`) to the node serving the domain.

use std::collections::BTreeMap;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use rookery_frontend::{
    Flash, FlashKind, FormErrors,
    pages::domain_settings::{self as page, CertificateView, ContactField, SettingsView},
};
use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    sign::CertifiedKey,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    db::DomainRow,
    domain_of,
    federation::{self, Federation, FederationMode},
};
use crate::{
    clock::format_ts,
    db::Pool,
    error::{AppError, AppResult},
    orgs::{OrgAccess, db::OrgId},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/domains/{domain_id}/settings", get(show))
        .route(
            "/o/{org_id}/domains/{domain_id}/settings/contacts",
            post(save_contacts),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/settings/registration",
            post(save_registration),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/settings/federation",
            post(save_federation),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/settings/tls",
            post(upload_certificate),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/settings/tls/remove",
            post(remove_certificate),
        )
}

/// The XEP-0157 contact kinds the page offers, as the node's spec names them (the node
/// publishes each as the `<kind>-addresses` field of its serverinfo form), with what each
/// is for.
pub const CONTACT_KINDS: [(&str, &str, &str); 6] = [
    (
        "abuse",
        "Abuse",
        "Where to report spam or abuse coming from this domain.",
    ),
    (
        "admin",
        "Administrators",
        "Who runs the service, for other server operators.",
    ),
    ("feedback", "Feedback", "Where people send comments."),
    ("sales", "Sales", "Who to ask about buying the service."),
    ("security", "Security", "Where to report security problems."),
    ("support", "Support", "Where users get help."),
];

/// Addresses a kind may list.
const MAX_ADDRESSES: usize = 10;
/// The longest address the node accepts.
const MAX_URI_LEN: usize = 1024;
/// The largest certificate chain and key the page takes (PEM text).
const MAX_CHAIN_BYTES: usize = 64 * 1024;
const MAX_KEY_BYTES: usize = 16 * 1024;
const MAX_CHAIN_LEN: usize = 10;

/// The seal context of a domain's TLS key: a sealed key only opens for its own domain.
pub fn tls_key_context(domain_id: &str) -> String {
    format!("domain-tls-key:{domain_id}")
}

// ---------------------------------------------------------------------------------------
// Contact addresses

/// The contact form as posted: one text per kind, an address per line.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ContactsForm {
    abuse: String,
    admin: String,
    feedback: String,
    sales: String,
    security: String,
    support: String,
}

impl ContactsForm {
    /// The texts in [`CONTACT_KINDS`] order.
    fn texts(&self) -> [(&'static str, &str); 6] {
        [
            ("abuse", self.abuse.as_str()),
            ("admin", self.admin.as_str()),
            ("feedback", self.feedback.as_str()),
            ("sales", self.sales.as_str()),
            ("security", self.security.as_str()),
            ("support", self.support.as_str()),
        ]
    }
}

/// The addresses typed for each kind (one per line; blank lines ignored, repeats dropped),
/// or an error for every kind with a bad line. Kinds with no address are left out.
pub fn parse_contacts(
    texts: &[(&'static str, &str)],
) -> Result<BTreeMap<String, Vec<String>>, FormErrors> {
    let mut errors = FormErrors::default();
    let mut contacts = BTreeMap::new();
    for (kind, text) in texts {
        let mut addresses: Vec<String> = Vec::new();
        let mut problem = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Err(why) = check_contact_uri(line) {
                problem = Some(format!("Line {}: {why}", n + 1));
                break;
            }
            if !addresses.iter().any(|a| a == line) {
                addresses.push(line.to_string());
            }
        }
        if problem.is_none() && addresses.len() > MAX_ADDRESSES {
            problem = Some(format!("List at most {MAX_ADDRESSES} addresses."));
        }
        match problem {
            Some(why) => errors.add(kind, why),
            None if addresses.is_empty() => {}
            None => {
                contacts.insert(kind.to_string(), addresses);
            }
        }
    }
    if errors.is_empty() {
        Ok(contacts)
    } else {
        Err(errors)
    }
}

/// A `mailto:`, `xmpp:` or `https:` URI with a real address in it.
fn check_contact_uri(uri: &str) -> Result<(), String> {
    let shown: String = if uri.chars().count() > 60 {
        format!("{}…", uri.chars().take(60).collect::<String>())
    } else {
        uri.to_string()
    };
    let not_a = || {
        format!(
            "\"{shown}\" is not an address. Use mailto:abuse@example.com, xmpp:support@example.com or https://example.com/contact."
        )
    };
    if uri.len() > MAX_URI_LEN {
        return Err(format!(
            "\"{shown}\" is longer than {MAX_URI_LEN} characters."
        ));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{shown}\" has spaces in it."));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(not_a());
    };
    let domain_ok = |d: &str| crate::dns::ascii_domain(d).is_ok();
    match scheme.to_ascii_lowercase().as_str() {
        "mailto" => {
            let address = rest.split('?').next().unwrap_or_default();
            match address.rsplit_once('@') {
                Some((local, domain))
                    if !local.is_empty()
                        && !local.contains(['<', '>', '"', ','])
                        && domain_ok(domain) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "\"{shown}\" is not a mail address; write it as mailto:name@example.com."
                )),
            }
        }
        "xmpp" => {
            // XEP-0147: xmpp:[node@]domain[/resource][?query]; no authority part.
            let jid = rest.split('?').next().unwrap_or_default();
            let bare = jid.split('/').next().unwrap_or_default();
            let (node, domain) = match bare.rsplit_once('@') {
                Some((n, d)) => (Some(n), d),
                None => (None, bare),
            };
            if jid.starts_with("//")
                || node.is_some_and(|n| n.is_empty() || n.contains(['@', '"', '<', '>']))
                || !domain_ok(domain)
            {
                return Err(format!(
                    "\"{shown}\" is not a chat address; write it as xmpp:name@example.com."
                ));
            }
            Ok(())
        }
        "https" => match url::Url::parse(uri) {
            Ok(u)
                if u.username().is_empty()
                    && u.password().is_none()
                    && u.host_str().is_some_and(domain_ok) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "\"{shown}\" is not a web address; write it as https://example.com/contact."
            )),
        },
        _ => Err(not_a()),
    }
}

// ---------------------------------------------------------------------------------------
// In-band registration

/// The registration form as posted: the checkbox's value, absent when it is not ticked.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RegistrationForm {
    registration: Option<String>,
}

/// The checkbox's value as a switch: absent or empty is off; what a checkbox or an API
/// client sends for "on" is on; anything else is an error for the field.
pub fn parse_switch(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(false),
        Some(v)
            if ["on", "1", "true", "yes"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t)) =>
        {
            Ok(true)
        }
        Some(v)
            if ["off", "0", "false", "no"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t)) =>
        {
            Ok(false)
        }
        Some(_) => Err("Tick the box to let people create accounts, or leave it empty.".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Federation

/// The federation form as posted: the chosen mode (a radio button) and the allow-list's
/// text, one domain per line.
#[derive(Deserialize, Default)]
#[serde(default)]
struct FederationForm {
    federation: Option<String>,
    federation_allow: String,
}

impl FederationForm {
    /// The choice checked for the domain `own`, or the form's errors by field.
    fn check(&self, own: &str) -> Result<Federation, FormErrors> {
        let mut errors = FormErrors::default();
        let Some(mode) = self.federation.as_deref().and_then(FederationMode::parse) else {
            errors.add(
                "federation",
                "Choose whom this domain talks with: one of the three options.",
            );
            return Err(errors);
        };
        federation::check(own, mode, federation::lines(&self.federation_allow)).map_err(|e| {
            let text = match e.index() {
                Some(i) => format!("Line {}: {e}", i + 1),
                None => e.to_string(),
            };
            errors.add("federation_allow", text);
            errors
        })
    }
}

// ---------------------------------------------------------------------------------------
// TLS certificate

/// Why an uploaded certificate and key are refused. [`CertificateError::field`] names the
/// form field each is shown at.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "Paste the certificate chain: PEM text beginning with -----BEGIN CERTIFICATE-----, the domain's certificate first."
    )]
    NoCertificate,
    #[error("The certificate chain is not valid PEM: {0}.")]
    BadPem(String),
    #[error("{0}")]
    BadCertificate(String),
    #[error(
        "Paste the private key: unencrypted PEM text beginning with -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)."
    )]
    NoKey,
    #[error(
        "This private key cannot be used: {0}. Use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key."
    )]
    UnusableKey(String),
    #[error(
        "This private key does not belong to the first certificate of the chain (the domain's own)."
    )]
    KeyMismatch,
    #[error("This certificate is not valid for {domain}: it names {names}.")]
    WrongDomain { domain: String, names: String },
    #[error("This certificate expired on {0}.")]
    Expired(String),
    #[error("This certificate is not valid before {0}.")]
    NotYetValid(String),
}

impl CertificateError {
    /// The form field the error belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NoKey | Self::UnusableKey(_) | Self::KeyMismatch => "key_pem",
            _ => "cert_pem",
        }
    }
}

/// What the page shows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The DNS names it is for (its subject alternative names; its common name without any).
    pub names: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the leaf certificate (DER), colon-separated upper-case hex.
    pub sha256: String,
}

/// An upload that passed [`check_certificate`], re-encoded as plain PEM (text around the
/// PEM blocks dropped), ready to store and to send to the node.
#[derive(Debug)]
pub struct CheckedCertificate {
    pub chain_pem: String,
    pub key_pem: String,
    pub info: CertificateInfo,
}

/// Checks a certificate chain and key for `domain` at `now` (Unix seconds): the chain is
/// PEM certificates, the key a usable PEM private key that belongs to the first (leaf)
/// certificate, which names the domain (a wildcard covers one label) and is valid now.
pub fn check_certificate(
    domain: &str,
    chain_pem: &str,
    key_pem: &str,
    now: i64,
) -> Result<CheckedCertificate, CertificateError> {
    let chain_pem = chain_pem.trim();
    let key_pem = key_pem.trim();
    if chain_pem.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    if chain_pem.len() > MAX_CHAIN_BYTES {
        return Err(CertificateError::BadCertificate(format!(
            "The certificate chain is longer than {} KiB.",
            MAX_CHAIN_BYTES / 1024
        )));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertificateError::BadPem(e.to_string()))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(CertificateError::NoCertificate);
    };
    if chain.len() > MAX_CHAIN_LEN {
        return Err(CertificateError::BadCertificate(format!(
            "The chain has {} certificates; at most {MAX_CHAIN_LEN} are taken.",
            chain.len()
        )));
    }
    for (i, c) in chain.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            return Err(CertificateError::BadCertificate(format!(
                "Certificate {} of the chain cannot be read: {e}.",
                i + 1
            )));
        }
    }
    let info = info_of(&leaf).map_err(|e| CertificateError::BadCertificate(format!("{e:#}")))?;

    if key_pem.is_empty() || key_pem.len() > MAX_KEY_BYTES {
        return Err(CertificateError::NoKey);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| CertificateError::NoKey)?;
    let signing =
        any_supported_type(&key).map_err(|e| CertificateError::UnusableKey(e.to_string()))?;
    match CertifiedKey::new(chain.clone(), signing).keys_match() {
        // Unknown: the key type cannot say its public key; the node takes it the same way.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertificateError::KeyMismatch),
    }

    let wrong_domain = || CertificateError::WrongDomain {
        domain: domain.to_string(),
        names: if info.names.is_empty() {
            "no domain".into()
        } else {
            info.names.join(", ")
        },
    };
    let ascii = crate::dns::ascii_domain(domain).map_err(|_| wrong_domain())?;
    let name = ServerName::try_from(ascii).map_err(|_| wrong_domain())?;
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|e| {
        CertificateError::BadCertificate(format!("The first certificate cannot be read: {e}."))
    })?;
    end_entity
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| wrong_domain())?;

    if info.not_after <= now {
        return Err(CertificateError::Expired(format_ts(info.not_after)));
    }
    if info.not_before > now {
        return Err(CertificateError::NotYetValid(format_ts(info.not_before)));
    }
    Ok(CheckedCertificate {
        chain_pem: chain
            .iter()
            .map(|c| to_pem("CERTIFICATE", c))
            .collect::<String>(),
        key_pem: to_pem(key_label(&key), key.secret_der()),
        info,
    })
}

/// Names, issuer, validity and fingerprint of a certificate (DER).
fn info_of(der: &[u8]) -> anyhow::Result<CertificateInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("The first certificate cannot be read: {e}."))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| cert.issuer().to_string());
    Ok(CertificateInfo {
        names,
        issuer,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256: Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    })
}

/// What the page shows of a stored chain (its first certificate).
pub fn certificate_info(chain_pem: &str) -> anyhow::Result<CertificateInfo> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate"))??;
    info_of(&leaf)
}

fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------------------
// Storage

/// States in which a domain's settings can change (a deleting domain's cannot).
const EDITABLE: &str = "('pending_payment', 'provisioning', 'active', 'suspended')";

fn editable(d: &DomainRow) -> bool {
    matches!(
        d.state.as_str(),
        "pending_payment" | "provisioning" | "active" | "suspended"
    )
}

/// Stores the domain's contact addresses with a new generation; false when the domain is
/// not the organisation's or its settings can no longer change.
#[tracing::instrument(skip_all, fields(domain_id = %id))]
async fn store_contacts(
    db: &Pool,
    org: &OrgId,
    id: &str,
    contacts: &BTreeMap<String, Vec<String>>,
    now: i64,
) -> anyhow::Result<bool> {
    let json = serde_json::to_string(contacts)?;
    let done = sqlx::query(&format!(
        "UPDATE domains SET contacts = $1, generation = generation + 1, attempts = 0, next_attempt_at = 0, updated_at = $2
         WHERE id = $3 AND org_id = $4 AND state IN {EDITABLE}"
    ))
    .bind(json)
    .bind(now)
    .bind(id)
    .bind(&org.0)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Switches in-band registration on or off with a new generation (only when it changes);
/// false as for [`store_contacts`]. The API's domain update uses it too.
#[tracing::instrument(skip_all, fields(domain_id = %id, on))]
pub async fn store_registration(
    db: &Pool,
    org: &OrgId,
    id: &str,
    on: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE domains SET registration = $1,
            generation = generation + CASE WHEN registration = $1 THEN 0 ELSE 1 END,
            attempts = 0, next_attempt_at = 0, updated_at = $2
         WHERE id = $3 AND org_id = $4 AND state IN {EDITABLE}"
    ))
    .bind(i64::from(on))
    .bind(now)
    .bind(id)
    .bind(&org.0)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the domain's federation with a new generation (only when it changes); false as
/// for [`store_contacts`]. The API's domain update uses it too.
#[tracing::instrument(skip_all, fields(domain_id = %id, mode = f.mode.as_str()))]
pub async fn store_federation(
    db: &Pool,
    org: &OrgId,
    id: &str,
    f: &Federation,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE domains SET federation_mode = $1, federation_allow = $2,
            generation = generation + CASE WHEN federation_mode = $1 AND federation_allow = $2 THEN 0 ELSE 1 END,
            attempts = 0, next_attempt_at = 0, updated_at = $3
         WHERE id = $4 AND org_id = $5 AND state IN {EDITABLE}"
    ))
    .bind(f.mode.as_str())
    .bind(f.stored_allow())
    .bind(now)
    .bind(id)
    .bind(&org.0)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores (or, with None, removes) the domain's certificate chain and sealed key with a
/// new generation; false as for [`store_contacts`].
#[tracing::instrument(skip_all, fields(domain_id = %id))]
async fn store_tls(
    db: &Pool,
    org: &OrgId,
    id: &str,
    tls: Option<(&str, &str)>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE domains SET tls_cert_pem = $1, tls_key_sealed = $2, generation = generation + 1, attempts = 0,
            next_attempt_at = 0, updated_at = $3
         WHERE id = $4 AND org_id = $5 AND state IN {EDITABLE}"
    ))
    .bind(tls.map(|t| t.0))
    .bind(tls.map(|t| t.1))
    .bind(now)
    .bind(id)
    .bind(&org.0)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------
// Handlers

/// The page's one-off messages (`?notice=`).
fn notice(code: &str) -> Option<Flash> {
    let text = match code {
        "contacts-saved" => "Contact addresses saved; the server publishes them within seconds.",
        "registration-on" => {
            "People can now create accounts from their XMPP app, within the plan's account limit."
        }
        "registration-off" => "Accounts can no longer be created from XMPP apps.",
        "federation-open" => {
            "Saved: this domain talks with the whole XMPP network; the server applies it within seconds."
        }
        "federation-allowlist" => {
            "Saved: this domain talks only with the listed domains; the server applies it within seconds."
        }
        "federation-closed" => {
            "Saved: this domain talks with no other domain; the server applies it within seconds."
        }
        "certificate-saved" => {
            "Certificate saved; the server presents it to clients within seconds."
        }
        "certificate-removed" => {
            "Certificate removed; the server goes back to a certificate of its own."
        }
        _ => return None,
    };
    Some(Flash {
        kind: FlashKind::Success,
        text: text.into(),
    })
}

/// What was typed, for a page shown again with errors.
#[derive(Default)]
struct Typed {
    registration_errors: FormErrors,
    /// The federation form as posted: (mode, allow-list text).
    federation: Option<(String, String)>,
    federation_errors: FormErrors,
    contacts: Option<[(&'static str, String); 6]>,
    contact_errors: FormErrors,
    cert_pem: String,
    tls_errors: FormErrors,
}

async fn render(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    notice_code: Option<&str>,
    typed: Typed,
) -> AppResult<Html<String>> {
    let mut ctx = ctx(
        state,
        &access.signed_in.visitor,
        format!("Settings of {}", d.domain),
        "domain-settings",
        Some(&access.org),
        None,
    )
    .await?;
    ctx.flash = notice_code.and_then(notice);
    let contacts = CONTACT_KINDS
        .iter()
        .enumerate()
        .map(|(i, (kind, label, hint))| ContactField {
            kind,
            label,
            hint,
            text: match &typed.contacts {
                Some(t) => t[i].1.clone(),
                None => d
                    .contacts
                    .get(*kind)
                    .map(|a| a.join("\n"))
                    .unwrap_or_default(),
            },
        })
        .collect();
    let certificate = match &d.tls_cert_pem {
        Some(pem) => match certificate_info(pem) {
            Ok(info) => Some(CertificateView {
                names: info.names.join(", "),
                issuer: info.issuer,
                not_before: format_ts(info.not_before),
                not_after: format_ts(info.not_after),
                expired: info.not_after <= state.clock.now(),
                sha256: info.sha256,
            }),
            Err(e) => {
                return Err(AppError::Internal(
                    e.context("reading a stored certificate"),
                ));
            }
        },
        None => None,
    };
    Ok(Html(page::settings(
        ctx,
        SettingsView {
            org_id: access.org.id.0.clone(),
            domain_id: d.id.clone(),
            domain: d.domain.clone(),
            editable: editable(d),
            registration: d.registration,
            registration_errors: typed.registration_errors,
            federation_mode: typed
                .federation
                .as_ref()
                .map_or(d.federation.mode.as_str().to_string(), |t| t.0.clone()),
            federation_allow: typed
                .federation
                .map_or_else(|| d.federation.allow.join("\n"), |t| t.1),
            federation_errors: typed.federation_errors,
            contacts,
            contact_errors: typed.contact_errors,
            certificate,
            cert_pem: typed.cert_pem,
            tls_errors: typed.tls_errors,
        },
    )))
}

async fn show(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    render(&state, &access, &d, q.notice.as_deref(), Typed::default()).await
}

fn settings_path(access: &OrgAccess, d: &DomainRow) -> String {
    format!("/o/{}/domains/{}/settings", access.org.id.0, d.id)
}

/// The page again, 422, with the form's errors and what was typed.
async fn refused(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    typed: Typed,
) -> AppResult<Response> {
    let html = render(state, access, d, None, typed).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
}

/// The refusal for a domain whose settings can no longer change.
fn frozen(field: &'static str) -> FormErrors {
    let mut errors = FormErrors::default();
    errors.add(
        field,
        "This domain is being deleted; its settings can no longer change.",
    );
    errors
}

async fn save_contacts(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<ContactsForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let typed = |contact_errors| Typed {
        contacts: Some(f.texts().map(|(k, t)| (k, t.to_string()))),
        contact_errors,
        ..Default::default()
    };
    let contacts = match parse_contacts(&f.texts()) {
        Ok(c) => c,
        Err(errors) => return refused(&state, &access, &d, typed(errors)).await,
    };
    let now = state.clock.now();
    if !store_contacts(&state.db, &access.org.id, &d.id, &contacts, now).await? {
        return refused(&state, &access, &d, typed(frozen(""))).await;
    }
    state.reconcile_now.notify_one();
    tracing::info!(
        domain = d.domain,
        kinds = contacts.len(),
        "contact addresses saved"
    );
    Ok(Redirect::to(&format!(
        "{}?notice=contacts-saved",
        settings_path(&access, &d)
    ))
    .into_response())
}

async fn save_registration(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<RegistrationForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let on = match parse_switch(f.registration.as_deref()) {
        Ok(on) => on,
        Err(why) => {
            let mut errors = FormErrors::default();
            errors.add("registration", why);
            let typed = Typed {
                registration_errors: errors,
                ..Default::default()
            };
            return refused(&state, &access, &d, typed).await;
        }
    };
    let now = state.clock.now();
    if !store_registration(&state.db, &access.org.id, &d.id, on, now).await? {
        let typed = Typed {
            registration_errors: frozen(""),
            ..Default::default()
        };
        return refused(&state, &access, &d, typed).await;
    }
    state.reconcile_now.notify_one();
    tracing::info!(domain = d.domain, on, "in-band registration switched");
    let notice = if on {
        "registration-on"
    } else {
        "registration-off"
    };
    Ok(Redirect::to(&format!("{}?notice={notice}", settings_path(&access, &d))).into_response())
}

async fn save_federation(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<FederationForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let typed = |federation_errors| Typed {
        federation: Some((
            f.federation.clone().unwrap_or_default(),
            f.federation_allow.clone(),
        )),
        federation_errors,
        ..Default::default()
    };
    let checked = match f.check(&d.domain) {
        Ok(c) => c,
        Err(errors) => return refused(&state, &access, &d, typed(errors)).await,
    };
    let now = state.clock.now();
    if !store_federation(&state.db, &access.org.id, &d.id, &checked, now).await? {
        return refused(&state, &access, &d, typed(frozen(""))).await;
    }
    state.reconcile_now.notify_one();
    tracing::info!(
        domain = d.domain,
        mode = checked.mode.as_str(),
        allowed = checked.allow.len(),
        "federation saved"
    );
    Ok(Redirect::to(&format!(
        "{}?notice=federation-{}",
        settings_path(&access, &d),
        checked.mode.as_str()
    ))
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CertificateForm {
    cert_pem: String,
    key_pem: String,
}

async fn upload_certificate(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<CertificateForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    // The key is never shown again, not even on a page that refuses it.
    let typed = |tls_errors| Typed {
        cert_pem: f.cert_pem.clone(),
        tls_errors,
        ..Default::default()
    };
    let now = state.clock.now();
    let checked = match check_certificate(&d.domain, &f.cert_pem, &f.key_pem, now) {
        Ok(c) => c,
        Err(e) => {
            let mut errors = FormErrors::default();
            errors.add(e.field(), e.to_string());
            return refused(&state, &access, &d, typed(errors)).await;
        }
    };
    let sealed = state.sealer.seal(&tls_key_context(&d.id), &checked.key_pem);
    let tls = Some((checked.chain_pem.as_str(), sealed.as_str()));
    if !store_tls(&state.db, &access.org.id, &d.id, tls, now).await? {
        return refused(&state, &access, &d, typed(frozen(""))).await;
    }
    state.reconcile_now.notify_one();
    tracing::info!(
        domain = d.domain,
        sha256 = checked.info.sha256,
        not_after = checked.info.not_after,
        "TLS certificate saved"
    );
    Ok(Redirect::to(&format!(
        "{}?notice=certificate-saved",
        settings_path(&access, &d)
    ))
    .into_response())
}

async fn remove_certificate(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    if d.tls_cert_pem.is_some() {
        let now = state.clock.now();
        if !store_tls(&state.db, &access.org.id, &d.id, None, now).await? {
            let typed = Typed {
                tls_errors: frozen(""),
                ..Default::default()
            };
            return refused(&state, &access, &d, typed).await;
        }
        state.reconcile_now.notify_one();
        tracing::info!(domain = d.domain, "TLS certificate removed");
    }
    Ok(Redirect::to(&format!(
        "{}?notice=certificate-removed",
        settings_path(&access, &d)
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn texts(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        pairs.to_vec()
    }

    #[test]
    fn the_registration_box_reads_as_on_only_when_ticked_and_junk_is_an_error() {
        assert_eq!(parse_switch(None), Ok(false));
        assert_eq!(parse_switch(Some("")), Ok(false));
        assert_eq!(parse_switch(Some("on")), Ok(true));
        assert_eq!(parse_switch(Some(" TRUE ")), Ok(true));
        assert_eq!(parse_switch(Some("off")), Ok(false));
        assert!(
            parse_switch(Some("maybe"))
                .unwrap_err()
                .starts_with("Tick the box")
        );
    }

    #[test]
    fn the_federation_form_names_a_missing_choice_and_a_bad_line() {
        let form = |mode: Option<&str>, allow: &str| FederationForm {
            federation: mode.map(str::to_string),
            federation_allow: allow.into(),
        };
        let own = "chat.example.com";
        for mode in [None, Some(""), Some("everyone")] {
            let errors = form(mode, "").check(own).unwrap_err();
            assert!(
                errors
                    .get("federation")
                    .unwrap()
                    .contains("one of the three options"),
                "{mode:?}"
            );
        }
        let errors = form(Some("allowlist"), "ok.example\n\nbad domain")
            .check(own)
            .unwrap_err();
        assert_eq!(
            errors.get("federation_allow").unwrap(),
            "Line 3: “bad domain”: This is not a valid domain name. Use letters, digits, hyphens and dots, e.g. chat.example.com."
        );
        let errors = form(Some("allowlist"), " \n").check(own).unwrap_err();
        assert!(
            errors
                .get("federation_allow")
                .unwrap()
                .starts_with("List at least one domain")
        );
        let f = form(Some("allowlist"), "b.example\nA.example\n")
            .check(own)
            .unwrap();
        assert_eq!(f.allow, vec!["a.example", "b.example"]);
        assert_eq!(
            form(Some("closed"), "").check(own).unwrap().mode,
            FederationMode::Closed
        );
    }

    #[test]
    fn contact_addresses_are_read_one_per_line_and_empty_kinds_left_out() {
        let c = parse_contacts(&texts(&[
            (
                "abuse",
                " mailto:abuse@example.com \n\nmailto:abuse@example.com\r\nxmpp:abuse@example.com\n",
            ),
            ("support", "https://example.com/help?lang=en"),
            ("sales", "  \n"),
        ]))
        .unwrap();
        assert_eq!(
            c,
            BTreeMap::from([
                (
                    "abuse".to_string(),
                    vec![
                        "mailto:abuse@example.com".to_string(),
                        "xmpp:abuse@example.com".to_string()
                    ]
                ),
                (
                    "support".to_string(),
                    vec!["https://example.com/help?lang=en".to_string()]
                ),
            ])
        );
    }

    #[test]
    fn bad_contact_addresses_are_named_with_their_line_and_field() {
        let errors = parse_contacts(&texts(&[
            ("abuse", "mailto:abuse@example.com\nabuse@example.com"),
            ("admin", "xmpp:admin@example.com"),
            ("security", "http://example.com/security"),
        ]))
        .unwrap_err();
        assert!(
            errors
                .get("abuse")
                .unwrap()
                .starts_with("Line 2: \"abuse@example.com\" is not an address"),
            "{errors:?}"
        );
        assert!(errors.get("security").unwrap().contains("not an address"));
        assert!(errors.get("admin").is_none());
        for bad in [
            "mailto:",
            "mailto:@example.com",
            "mailto:abuse@",
            "mailto:abuse@not a domain",
            "mailto:abuse@localhost",
            "xmpp:",
            "xmpp://admin@example.com",
            "xmpp:@example.com",
            "https://",
            "https://user:pw@example.com/",
            "https://exa mple.com/",
            "tel:+4912345",
            "javascript:alert(1)",
        ] {
            assert!(check_contact_uri(bad).is_err(), "{bad}");
        }
        for good in [
            "MAILTO:abuse@example.com",
            "mailto:abuse@example.com?subject=spam",
            "xmpp:example.com",
            "xmpp:support@example.com/desk?message",
            "https://example.com",
            "https://bücher.example/kontakt",
        ] {
            assert_eq!(check_contact_uri(good), Ok(()), "{good}");
        }
        let many: String = (0..11)
            .map(|i| format!("mailto:a{i}@example.com\n"))
            .collect();
        let errors = parse_contacts(&[("sales", many.as_str())]).unwrap_err();
        assert_eq!(errors.get("sales").unwrap(), "List at most 10 addresses.");
    }

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `names` valid from `from` to `until` (Unix seconds): (chain, key).
    fn leaf(ca: &Ca, names: &[&str], from: i64, until: i64) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (format!("{}{}", cert.pem(), ca.pem), key.serialize_pem())
    }

    fn year(n: i64) -> i64 {
        NOW + n * 365 * 86_400
    }

    #[test]
    fn a_good_chain_is_accepted_re_encoded_and_described() {
        let ca = ca();
        let (chain, key) = leaf(&ca, &["chat.example.com"], year(-1), year(1));
        let pasted = format!("Bag Attributes: whatever\n{chain}\n");
        let c = check_certificate("chat.example.com", &pasted, &key, NOW).unwrap();
        assert_eq!(c.info.names, vec!["chat.example.com"]);
        assert_eq!(c.info.issuer, "Test CA");
        assert_eq!(c.info.not_after, year(1));
        assert_eq!(c.info.sha256.len(), 32 * 3 - 1);
        assert!(!c.chain_pem.contains("Bag Attributes"));
        assert_eq!(c.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(certificate_info(&c.chain_pem).unwrap(), c.info);
        assert!(c.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // The stored key still opens as the same key.
        let again = check_certificate("chat.example.com", &c.chain_pem, &c.key_pem, NOW).unwrap();
        assert_eq!(again.key_pem, c.key_pem);
    }

    #[test]
    fn a_wildcard_covers_one_label_and_international_names_match_their_punycode() {
        let ca = ca();
        let (chain, key) = leaf(&ca, &["*.example.com"], year(-1), year(1));
        assert!(check_certificate("chat.example.com", &chain, &key, NOW).is_ok());
        assert!(matches!(
            check_certificate("a.chat.example.com", &chain, &key, NOW),
            Err(CertificateError::WrongDomain { .. })
        ));
        let (chain, key) = leaf(&ca, &["xn--bcher-kva.example"], year(-1), year(1));
        assert!(check_certificate("bücher.example", &chain, &key, NOW).is_ok());
    }

    #[test]
    fn bad_uploads_are_refused_with_the_reason_at_their_field() {
        let ca = ca();
        let (chain, key) = leaf(&ca, &["chat.example.com"], year(-1), year(1));
        let (_, other_key) = leaf(&ca, &["chat.example.com"], year(-1), year(1));
        let (elsewhere, elsewhere_key) = leaf(&ca, &["elsewhere.example"], year(-1), year(1));
        let (expired, expired_key) = leaf(&ca, &["chat.example.com"], year(-2), year(-1));
        let (early, early_key) = leaf(&ca, &["chat.example.com"], year(1), year(2));
        let check =
            |c: &str, k: &str| check_certificate("chat.example.com", c, k, NOW).unwrap_err();

        assert_eq!(check("", &key), CertificateError::NoCertificate);
        assert_eq!(check("garbage", &key), CertificateError::NoCertificate);
        assert!(matches!(
            check(
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                &key
            ),
            CertificateError::BadPem(_)
        ));
        let junk = to_pem("CERTIFICATE", b"not DER at all");
        let e = check(&junk, &key);
        assert!(matches!(e, CertificateError::BadCertificate(_)), "{e:?}");
        assert_eq!(e.field(), "cert_pem");
        assert_eq!(check(&chain, ""), CertificateError::NoKey);
        assert_eq!(check(&chain, &chain), CertificateError::NoKey);
        let e = check(&chain, &other_key);
        assert_eq!(e, CertificateError::KeyMismatch);
        assert_eq!(e.field(), "key_pem");
        let e = check(&elsewhere, &elsewhere_key);
        assert_eq!(
            e.to_string(),
            "This certificate is not valid for chat.example.com: it names elsewhere.example."
        );
        assert!(matches!(
            check(&expired, &expired_key),
            CertificateError::Expired(_)
        ));
        assert!(matches!(
            check(&early, &early_key),
            CertificateError::NotYetValid(_)
        ));
    }
}
