//! HTTP file upload (XEP-0363, `urn:xmpp:http:upload:0`) as a service of each vhost at
//! `upload.<vhost>` (one of `services`), listed in the vhost's disco#items while its spec
//! allows uploads.
//!
//! Slots: an account of the vhost asks the service for a slot (file name, size, content
//! type). The size is checked against the vhost's largest file (its spec, else the node's
//! `limits.upload_max_file_bytes`; too large is `not-acceptable` with `<file-too-large>`
//! naming the maximum), and what the account and the vhost already store against their
//! quotas (`resource-constraint`). The answer is a PUT URL and a GET URL, the same one:
//! `<public_http_url>/upload/<vhost>/<id>/<file name>` (the HTTP port serves HTTPS with
//! the vhost's certificate), where `id` is 128 random bits. The PUT
//! carries an `Authorization: Bearer` header the slot names: the slot's owner, size,
//! content type and expiry ([`SLOT_SECS`]), signed with HMAC-SHA256 under a secret of the
//! node (`node_secrets`), over the URL's vhost, id and name too. Nothing is stored for a
//! slot, so slots survive a restart and cost nothing when unused.
//!
//! HTTP: the PUT must match its slot (signature, expiry, `Content-Length`, content type)
//! and the quotas are checked again; the body goes to `<upload_dir>/<vhost>/<id>.part`,
//! created exclusively (a second PUT of one slot is `409`), and is renamed to `<id>` once
//! all of it arrived, then recorded in `upload_files`. GET and HEAD serve the file with
//! its content type, byte ranges and conditional requests (tower-http's `ServeFile`),
//! inline for images, audio, video, plain text and PDF and as an attachment otherwise,
//! always with `Content-Security-Policy: sandbox` and `nosniff`, so an uploaded page
//! cannot run in the node's origin. Every answer allows any origin (CORS), as web clients
//! upload from their own.
//!
//! Upkeep deletes files older than the vhost's `upload_retention_days`. Files outlive the
//! account that uploaded them until then (links to them sit in other people's chats).
//! A moved vhost's files follow its rows: the panel copies each one through the control
//! APIs of both nodes ([`file_for_move`], [`store_moved_file`]).

use std::{path::PathBuf, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::put,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::{
    control::moving::moving_text,
    node::{Node, unix_now},
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::SessionHandle,
    store::{StoredUpload, UploadLimits},
};

pub const NS: &str = "urn:xmpp:http:upload:0";

/// The subdomain of a vhost the service answers at.
pub const PREFIX: &str = "upload.";

/// Seconds a slot may be used for its PUT.
pub const SLOT_SECS: i64 = 300;

/// The name of the node secret that signs slots.
const SECRET: &str = "upload_hmac";

/// Bytes of a file name at most.
const MAX_FILENAME_BYTES: usize = 255;

/// Files deleted per round and vhost by upkeep.
const EXPIRE_BATCH: i64 = 500;

/// Whether the vhost is served here and its spec allows uploads.
pub fn enabled(node: &Node, vhost: &str) -> bool {
    node.host(vhost)
        .is_some_and(|h| h.policy.as_ref().is_none_or(|p| p.features.upload))
}

fn limits(node: &Node, vhost: &str) -> UploadLimits {
    node.host(vhost)
        .and_then(|h| h.policy.as_ref().map(|p| p.upload.clone()))
        .unwrap_or_default()
}

/// The largest file the vhost takes.
fn max_file_bytes(node: &Node, limits: &UploadLimits) -> i64 {
    limits
        .max_file_bytes
        .unwrap_or(node.settings.node.limits.upload_max_file_bytes)
}

// ---- XMPP ----------------------------------------------------------------------------------

/// Handles a stanza to `upload.<vhost>`.
pub async fn handle(node: &Node, me: &SessionHandle, vhost: &str, stanza: Element) {
    let Some((kind, payload)) = super::services::query(me, &stanza) else {
        return;
    };
    let reply =
        if kind == "get" && payload.is("query", ns::DISCO_INFO) && payload.attr("node").is_none() {
            iq_result(&stanza).with_child(disco_info(node, vhost))
        } else if kind == "get" && payload.is("query", ns::DISCO_ITEMS) {
            iq_result(&stanza).with_child(Element::new("query", ns::DISCO_ITEMS))
        } else if kind == "get" && payload.is("request", NS) {
            match slot(node, &me.jid, vhost, payload).await {
                Ok(slot) => iq_result(&stanza).with_child(slot),
                Err(refusal) => refusal.reply(&stanza),
            }
        } else {
            error_reply(&stanza, Condition::ServiceUnavailable, None)
        };
    me.deliver(reply);
}

fn disco_info(node: &Node, vhost: &str) -> Element {
    let max = max_file_bytes(node, &limits(node, vhost));
    let field = |var: &str, value: String| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    Element::new("query", ns::DISCO_INFO)
        .with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "store")
                .with_attr("type", "file")
                .with_attr("name", "HTTP File Upload"),
        )
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", NS))
        .with_child(
            Element::new("x", ns::DATA_FORMS)
                .with_attr("type", "result")
                .with_child(field("FORM_TYPE", NS.into()).with_attr("type", "hidden"))
                .with_child(field("max-file-size", max.to_string())),
        )
}

/// Why a slot is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Bad(String),
    TooLarge(i64),
    Quota(String),
    Forbidden(String),
    Busy(String),
    Internal,
}

impl Refusal {
    fn reply(&self, iq: &Element) -> Element {
        match self {
            Refusal::Bad(t) => error_reply(iq, Condition::BadRequest, Some(t)),
            Refusal::TooLarge(max) => {
                let mut e = error_reply(
                    iq,
                    Condition::NotAcceptable,
                    Some(&format!(
                        "The file is larger than the largest upload, {max} bytes."
                    )),
                );
                if let Some(err) = e.get_child_mut("error", iq.ns()) {
                    err.append_child(
                        Element::new("file-too-large", NS).with_child(
                            Element::new("max-file-size", NS).with_text(max.to_string()),
                        ),
                    );
                }
                e
            }
            Refusal::Quota(t) | Refusal::Busy(t) => {
                error_reply(iq, Condition::ResourceConstraint, Some(t))
            }
            Refusal::Forbidden(t) => error_reply(iq, Condition::Forbidden, Some(t)),
            Refusal::Internal => error_reply(iq, Condition::InternalServerError, None),
        }
    }
}

/// A slot request's fields, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotRequest {
    pub filename: String,
    pub size: i64,
    pub content_type: String,
}

/// Reads `<request filename size content-type/>`.
pub fn parse_request(req: &Element) -> Result<SlotRequest, Refusal> {
    let filename = req.attr("filename").unwrap_or_default().trim().to_string();
    check_filename(&filename).map_err(Refusal::Bad)?;
    let size = match req.attr("size").map(|s| s.trim().parse::<i64>()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            return Err(Refusal::Bad(
                "The size must be a whole number of bytes above 0.".into(),
            ));
        }
    };
    let content_type = match req.attr("content-type").map(str::trim) {
        None | Some("") => "application/octet-stream".to_string(),
        Some(t) => match t.parse::<mime::Mime>() {
            Ok(m) => m.essence_str().to_string(),
            Err(_) => {
                return Err(Refusal::Bad(format!(
                    "\"{t}\" is not a content type such as image/jpeg."
                )));
            }
        },
    };
    Ok(SlotRequest {
        filename,
        size,
        content_type,
    })
}

/// A file name a URL can carry and a disk never sees (files are stored by id).
fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("The request names no file.".into());
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err(format!(
            "File names may be {MAX_FILENAME_BYTES} bytes at most."
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err("File names may not contain slashes or control characters.".into());
    }
    Ok(())
}

async fn slot(node: &Node, from: &Jid, vhost: &str, req: &Element) -> Result<Element, Refusal> {
    let Some(owner) = from.node().filter(|_| from.domain() == vhost) else {
        return Err(Refusal::Forbidden(format!(
            "Only accounts of {vhost} may upload files here."
        )));
    };
    let req = parse_request(req)?;
    if node.is_frozen(vhost) {
        return Err(Refusal::Busy(moving_text(vhost)));
    }
    let limits = limits(node, vhost);
    let max = max_file_bytes(node, &limits);
    if req.size > max {
        return Err(Refusal::TooLarge(max));
    }
    check_quotas(node, vhost, owner, req.size, &limits).await?;
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|_| Refusal::Internal)?;
    let id = hex::encode(raw);
    let claims = Claims {
        owner: owner.to_string(),
        size: req.size,
        content_type: req.content_type.clone(),
        expires: unix_now() + SLOT_SECS,
    };
    let secret = node.store.node_secret(SECRET).await.map_err(|e| {
        tracing::error!(error = %e, "reading the upload secret failed");
        Refusal::Internal
    })?;
    let token = claims.sign(secret.as_bytes(), vhost, &id, &req.filename);
    let url = file_url(
        &node.settings.node.public_http_base(vhost),
        vhost,
        &id,
        &req.filename,
    )
    .ok_or(Refusal::Internal)?;
    Ok(Element::new("slot", NS)
        .with_child(
            Element::new("put", NS).with_attr("url", &url).with_child(
                Element::new("header", NS)
                    .with_attr("name", "Authorization")
                    .with_text(format!("Bearer {token}")),
            ),
        )
        .with_child(Element::new("get", NS).with_attr("url", url)))
}

/// Refuses `size` more bytes past the account's or the vhost's upload quota.
async fn check_quotas(
    node: &Node,
    vhost: &str,
    owner: &str,
    size: i64,
    limits: &UploadLimits,
) -> Result<(), Refusal> {
    if limits.quota_bytes.is_none() && limits.quota_bytes_per_account.is_none() {
        return Ok(());
    }
    let (mine, all) = node.store.upload_usage(vhost, owner).await.map_err(|e| {
        tracing::error!(error = %e, "reading upload usage failed");
        Refusal::Internal
    })?;
    if let Some(q) = limits.quota_bytes_per_account
        && mine + size > q
    {
        return Err(Refusal::Quota(format!(
            "Your files use {mine} of your {q} bytes of uploads; this one ({size} bytes) does not fit. Old files are deleted in time."
        )));
    }
    if let Some(q) = limits.quota_bytes
        && all + size > q
    {
        return Err(Refusal::Quota(format!(
            "The uploads of {vhost} use {all} of its {q} bytes; this file ({size} bytes) does not fit."
        )));
    }
    Ok(())
}

/// `<base>/upload/<vhost>/<id>/<name>`, each part percent-encoded.
pub fn file_url(base: &str, vhost: &str, id: &str, name: &str) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["upload", vhost, id, name]);
    Some(url.to_string())
}

/// What a slot's signature vouches for.
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    pub owner: String,
    pub size: i64,
    pub content_type: String,
    pub expires: i64,
}

impl Claims {
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.expires, self.size, self.owner, self.content_type
        )
    }

    fn mac(secret: &[u8], vhost: &str, id: &str, name: &str, text: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(format!("{vhost}\n{id}\n{name}\n{text}").as_bytes());
        mac
    }

    /// `<claims>.<signature>`, both base64url.
    pub fn sign(&self, secret: &[u8], vhost: &str, id: &str, name: &str) -> String {
        let text = self.text();
        let sig = Self::mac(secret, vhost, id, name, &text)
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&text),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The claims of a token signed for this URL; None if anything does not match.
    pub fn verify(token: &str, secret: &[u8], vhost: &str, id: &str, name: &str) -> Option<Self> {
        let (text, sig) = token.split_once('.')?;
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        Self::mac(secret, vhost, id, name, &text)
            .verify_slice(&sig)
            .ok()?;
        let mut parts = text.splitn(4, '\n');
        Some(Self {
            expires: parts.next()?.parse().ok()?,
            size: parts.next()?.parse().ok()?,
            owner: parts.next()?.to_string(),
            content_type: parts.next()?.to_string(),
        })
    }
}

// ---- HTTP ----------------------------------------------------------------------------------

/// The upload routes of the node's HTTP port.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(
            "/upload/{vhost}/{id}/{name}",
            put(put_file)
                .get(get_file)
                .head(get_file)
                .options(preflight),
        )
        .with_state(node)
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges"),
    );
    r
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut text = text.into();
    text.push('\n');
    cors(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
    )
}

async fn preflight() -> Response {
    let mut r = cors(StatusCode::NO_CONTENT.into_response());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// The file's place on disk for a well-formed id (whether or not the vhost offers uploads).
fn disk_path(node: &Node, vhost: &str, id: &str) -> Option<PathBuf> {
    let id_ok = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (id_ok && node.is_hosted(vhost)).then(|| node.settings.node.upload_dir().join(vhost).join(id))
}

/// The file's place on disk, for a hosted vhost and a well-formed id only.
fn file_path(node: &Node, vhost: &str, id: &str) -> Option<PathBuf> {
    disk_path(node, vhost, id).filter(|_| enabled(node, vhost))
}

async fn put_file(
    State(node): State<Arc<Node>>,
    Path((vhost, id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(path) = file_path(&node, &vhost, &id) else {
        return plain(StatusCode::NOT_FOUND, "There is no upload service here.");
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let secret = match node.store.node_secret(SECRET).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "reading the upload secret failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The upload could not be stored.",
            );
        }
    };
    let Some(claims) = token.and_then(|t| Claims::verify(t, secret.as_bytes(), &vhost, &id, &name))
    else {
        return plain(
            StatusCode::FORBIDDEN,
            "This upload needs the Authorization header of its slot; ask the upload service for a slot.",
        );
    };
    if matches!(node.store.upload(&vhost, &id).await, Ok(Some(_))) {
        return plain(StatusCode::CONFLICT, "This slot was used already.");
    }
    if claims.expires < unix_now() {
        return plain(
            StatusCode::FORBIDDEN,
            "This upload slot has expired; ask for a new one.",
        );
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    match length {
        None => {
            return plain(
                StatusCode::LENGTH_REQUIRED,
                "The upload needs a Content-Length.",
            );
        }
        Some(n) if n > claims.size => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The slot is for {} bytes, not {n}.", claims.size),
            );
        }
        Some(n) if n != claims.size => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("The slot is for {} bytes, not {n}.", claims.size),
            );
        }
        Some(_) => {}
    }
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok());
    if let Some(t) = &sent_type
        && !t.essence_str().eq_ignore_ascii_case(&claims.content_type)
    {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "The slot is for {}, not {}.",
                claims.content_type,
                t.essence_str()
            ),
        );
    }
    if node.is_frozen(&vhost) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, moving_text(&vhost));
    }
    if let Err(Refusal::Quota(text)) = check_quotas(
        &node,
        &vhost,
        &claims.owner,
        claims.size,
        &limits(&node, &vhost),
    )
    .await
    {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, text);
    }
    match receive(&path, body, claims.size).await {
        Ok(()) => {}
        Err(Received::Taken) => {
            return plain(StatusCode::CONFLICT, "This slot was used already.");
        }
        Err(Received::Wrong(text)) => return plain(StatusCode::BAD_REQUEST, text),
        Err(Received::Failed(e)) => {
            tracing::error!(vhost = %vhost, error = %e, "storing an upload failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The upload could not be stored.",
            );
        }
    }
    let row = StoredUpload {
        vhost: vhost.clone(),
        id,
        username: claims.owner,
        filename: name,
        content_type: claims.content_type,
        size_bytes: claims.size,
        created_at: unix_now(),
    };
    match node.store.add_upload(&row).await {
        Ok(true) => {
            tracing::info!(vhost = %vhost, user = %row.username, bytes = row.size_bytes, "file uploaded");
            plain(StatusCode::CREATED, "Stored.")
        }
        Ok(false) => plain(StatusCode::CONFLICT, "This slot was used already."),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::error!(vhost = %vhost, error = %e, "recording an upload failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The upload could not be stored.",
            )
        }
    }
}

enum Received {
    Taken,
    Wrong(String),
    Failed(anyhow::Error),
}

/// Writes the body to `<path>.part` (created exclusively), exactly `size` bytes, then
/// renames it to `path`.
async fn receive(path: &std::path::Path, mut body: Body, size: i64) -> Result<(), Received> {
    let part = path.with_extension("part");
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Received::Failed(e.into()))?;
    }
    if tokio::fs::try_exists(path).await.unwrap_or(false) {
        return Err(Received::Taken);
    }
    let mut file = match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .await
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Received::Taken),
        Err(e) => return Err(Received::Failed(e.into())),
    };
    let result = async {
        let mut written = 0i64;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Received::Wrong(format!("The upload broke off: {e}.")))?;
            if let Ok(data) = frame.into_data() {
                written += data.len() as i64;
                if written > size {
                    return Err(Received::Wrong(format!(
                        "The body is longer than the slot's {size} bytes."
                    )));
                }
                file.write_all(&data)
                    .await
                    .map_err(|e| Received::Failed(e.into()))?;
            }
        }
        if written != size {
            return Err(Received::Wrong(format!(
                "The body has {written} bytes, the slot {size}."
            )));
        }
        file.sync_all()
            .await
            .map_err(|e| Received::Failed(e.into()))?;
        tokio::fs::rename(&part, path)
            .await
            .map_err(|e| Received::Failed(e.into()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

/// Content types shown in the browser; everything else downloads.
fn shown_inline(content_type: &str) -> bool {
    ["image/", "audio/", "video/"]
        .iter()
        .any(|p| content_type.starts_with(p))
        && content_type != "image/svg+xml"
        || matches!(content_type, "text/plain" | "application/pdf")
}

/// `filename*=UTF-8''…` (RFC 6266, RFC 8187).
fn disposition(inline: bool, name: &str) -> String {
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!(
        "{}; filename*=UTF-8''{encoded}",
        if inline { "inline" } else { "attachment" }
    )
}

async fn get_file(
    State(node): State<Arc<Node>>,
    Path((vhost, id, name)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    use tower::ServiceExt;
    let not_found = || {
        plain(
            StatusCode::NOT_FOUND,
            "There is no such file (it may have expired).",
        )
    };
    let Some(path) = file_path(&node, &vhost, &id) else {
        return not_found();
    };
    let row = match node.store.upload(&vhost, &id).await {
        Ok(Some(r)) if r.filename == name => r,
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "reading an upload failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The file cannot be read now.",
            );
        }
    };
    let mime: mime::Mime = row
        .content_type
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let served = tower_http::services::ServeFile::new_with_mime(path, &mime)
        .oneshot(request)
        .await;
    let mut response = match served {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => return not_found(),
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    let h = response.headers_mut();
    let inline = shown_inline(mime.essence_str());
    if let Ok(v) = HeaderValue::from_str(&disposition(inline, &row.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    cors(response)
}

// ---- moves -----------------------------------------------------------------------------------

/// The file of an upload row, opened, for copying it to another node.
pub async fn file_for_move(
    node: &Node,
    vhost: &str,
    id: &str,
) -> anyhow::Result<Option<tokio::fs::File>> {
    let Some(path) = disk_path(node, vhost, id) else {
        return Ok(None);
    };
    if node.store.upload(vhost, id).await?.is_none() {
        return Ok(None);
    }
    match tokio::fs::File::open(&path).await {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What became of a file sent along with a moved vhost.
pub enum MovedFile {
    Stored,
    /// Its row is not here (the data was not imported first).
    NoRow,
    Wrong(String),
}

/// Stores the bytes of an upload whose row came with the vhost's data; a copy already
/// there (a move tried again) is replaced.
pub async fn store_moved_file(
    node: &Node,
    vhost: &str,
    id: &str,
    body: Body,
) -> anyhow::Result<MovedFile> {
    let (Some(path), Some(row)) = (
        disk_path(node, vhost, id),
        node.store.upload(vhost, id).await?,
    ) else {
        return Ok(MovedFile::NoRow);
    };
    let _ = tokio::fs::remove_file(&path).await;
    let _ = tokio::fs::remove_file(path.with_extension("part")).await;
    match receive(&path, body, row.size_bytes).await {
        Ok(()) => Ok(MovedFile::Stored),
        Err(Received::Wrong(why)) => Ok(MovedFile::Wrong(why)),
        Err(Received::Taken) => Ok(MovedFile::Wrong(
            "The file is being written already.".into(),
        )),
        Err(Received::Failed(e)) => Err(e),
    }
}

// ---- expiry --------------------------------------------------------------------------------

/// Deletes the files past each vhost's `upload_retention_days` as of `now` (Unix
/// seconds); returns how many went per vhost (only vhosts that lost some).
pub async fn expire(node: &Node, now: i64) -> Vec<(String, u64)> {
    let mut dropped = Vec::new();
    for (vhost, host) in node.hosts() {
        let Some(days) = host.policy.as_ref().and_then(|p| p.upload.retention_days) else {
            continue;
        };
        let cutoff = now.saturating_sub(days.max(0).saturating_mul(86_400));
        let rows = match node
            .store
            .uploads_before(&vhost, cutoff, EXPIRE_BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(vhost = %vhost, error = %e, "listing expired uploads failed");
                continue;
            }
        };
        let mut count = 0;
        for row in rows {
            if let Some(path) = file_path(node, &vhost, &row.id) {
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(vhost = %vhost, error = %e, "deleting an expired upload failed");
                        continue;
                    }
                }
            }
            if node.store.delete_upload(&vhost, &row.id).await.is_ok() {
                count += 1;
            }
        }
        if count > 0 {
            tracing::info!(vhost = %vhost, deleted = count, retention_days = days, "deleted uploads past the retention");
            dropped.push((vhost, count));
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        im,
        node::testing::{bind, delivered, node_with_spec, stanza},
    };

    const SECRET_BYTES: &[u8] = b"0123456789abcdef";

    #[test]
    fn slot_tokens_hold_for_their_url_only() {
        let c = Claims {
            owner: "alice".into(),
            size: 10,
            content_type: "image/png".into(),
            expires: 99,
        };
        let t = c.sign(SECRET_BYTES, "example.com", "ab", "a.png");
        assert_eq!(
            Claims::verify(&t, SECRET_BYTES, "example.com", "ab", "a.png"),
            Some(c)
        );
        for (vhost, id, name) in [
            ("example.org", "ab", "a.png"),
            ("example.com", "ac", "a.png"),
            ("example.com", "ab", "b.png"),
        ] {
            assert_eq!(Claims::verify(&t, SECRET_BYTES, vhost, id, name), None);
        }
        assert_eq!(
            Claims::verify(&t, b"another secret", "example.com", "ab", "a.png"),
            None
        );
        // Claims changed after signing (a bigger size).
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode("99\n1000\nalice\nimage/png")
        );
        assert_eq!(
            Claims::verify(&forged, SECRET_BYTES, "example.com", "ab", "a.png"),
            None
        );
        assert_eq!(
            Claims::verify("garbage", SECRET_BYTES, "example.com", "ab", "a.png"),
            None
        );
    }

    #[test]
    fn requests_need_a_plain_name_a_size_and_a_real_content_type() {
        let req = |attrs: &str| parse_request(&stanza(&format!("<request xmlns='{NS}' {attrs}/>")));
        assert_eq!(
            req("filename='a b.jpg' size='12' content-type='image/JPEG'").unwrap(),
            SlotRequest {
                filename: "a b.jpg".into(),
                size: 12,
                content_type: "image/jpeg".into()
            }
        );
        assert_eq!(
            req("filename='x' size='1'").unwrap().content_type,
            "application/octet-stream"
        );
        for bad in [
            "size='12'",
            "filename='../x' size='12'",
            "filename='a/b' size='12'",
            "filename='..' size='12'",
            "filename='x' size='0'",
            "filename='x' size='-4'",
            "filename='x' size='many'",
            "filename='x' size='3' content-type='not a type'",
        ] {
            assert!(matches!(req(bad), Err(Refusal::Bad(_))), "{bad}");
        }
        let long = "x".repeat(MAX_FILENAME_BYTES + 1);
        assert!(matches!(
            req(&format!("filename='{long}' size='1'")),
            Err(Refusal::Bad(_))
        ));
    }

    #[test]
    fn urls_encode_each_part_and_keep_a_base_path() {
        assert_eq!(
            file_url(
                "https://xmpp.example.net:5280",
                "example.com",
                "ab",
                "my photo#1?.jpg"
            )
            .unwrap(),
            "https://xmpp.example.net:5280/upload/example.com/ab/my%20photo%231%3F.jpg"
        );
        assert_eq!(
            file_url("https://example.net/xmpp/", "example.com", "ab", "a").unwrap(),
            "https://example.net/xmpp/upload/example.com/ab/a"
        );
    }

    fn spec(limits: serde_json::Value) -> serde_json::Value {
        json!({"domain": "example.com", "generation": 1, "limits": limits})
    }

    /// Asks `upload.example.com` for a slot as `jid`; the answer.
    async fn ask_slot(node: &Node, jid: &str, attrs: &str) -> Element {
        let (me, mut rx) = bind(node, jid);
        let iq = stanza(&format!(
            "<iq xmlns='jabber:client' type='get' id='s1' to='upload.example.com'><request xmlns='{NS}' {attrs}/></iq>"
        ));
        im::handle(node, &me, iq).await;
        delivered(&mut rx).pop().expect("an answer")
    }

    fn slot_urls(answer: &Element) -> (String, String, String) {
        let slot = answer
            .get_child("slot", NS)
            .unwrap_or_else(|| panic!("no slot: {}", answer.to_xml()));
        let put = slot.get_child("put", NS).unwrap();
        let auth = put.get_child("header", NS).unwrap();
        assert_eq!(auth.attr("name"), Some("Authorization"));
        (
            put.attr("url").unwrap().to_string(),
            auth.text(),
            slot.get_child("get", NS)
                .unwrap()
                .attr("url")
                .unwrap()
                .to_string(),
        )
    }

    fn condition(answer: &Element) -> String {
        let e = answer
            .get_child("error", ns::CLIENT)
            .unwrap_or_else(|| panic!("no error: {}", answer.to_xml()));
        e.children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS)
            .unwrap()
            .name()
            .to_string()
    }

    async fn http(
        node: &Arc<Node>,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let path = url.split_once("5280").map_or(url, |(_, p)| p);
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = router(node.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes().to_vec(),
        )
    }

    #[tokio::test]
    async fn the_service_is_listed_describes_its_limit_and_answers_only_its_vhosts_accounts() {
        let (node, _dir) =
            node_with_spec(spec(json!({"upload_max_file_bytes": 1000})), &["alice"]).await;
        let (me, mut rx) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &me, stanza("<iq xmlns='jabber:client' type='get' id='i' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")).await;
        let items = delivered(&mut rx).pop().unwrap();
        assert!(
            items.to_xml().contains("jid=\"upload.example.com\"")
                || items.to_xml().contains("jid='upload.example.com'"),
            "{}",
            items.to_xml()
        );
        im::handle(&node, &me, stanza("<iq xmlns='jabber:client' type='get' id='i' to='upload.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
        let info = delivered(&mut rx).pop().unwrap().to_xml();
        assert!(
            info.contains(NS)
                && info.contains("max-file-size")
                && info.contains("<value>1000</value>"),
            "{info}"
        );
        let too_big = ask_slot(
            &node,
            "alice@example.com/desk",
            "filename='a.bin' size='1001'",
        )
        .await;
        assert_eq!(condition(&too_big), "not-acceptable");
        assert!(
            too_big
                .to_xml()
                .contains("<max-file-size>1000</max-file-size>"),
            "{}",
            too_big.to_xml()
        );
        let stranger = ask_slot(
            &node,
            "mallory@elsewhere.example/x",
            "filename='a.bin' size='10'",
        )
        .await;
        assert_eq!(condition(&stranger), "forbidden");
        // A vhost whose spec switches uploads off has no service.
        let (off, _dir2) = node_with_spec(
            json!({"domain": "example.com", "generation": 1, "features": {"upload": false}}),
            &["alice"],
        )
        .await;
        let answer = ask_slot(&off, "alice@example.com/desk", "filename='a.bin' size='10'").await;
        assert_eq!(condition(&answer), "remote-server-not-found");
    }

    #[tokio::test]
    async fn an_upload_is_stored_served_with_ranges_and_counted_against_the_quota() {
        let (node, _dir) = node_with_spec(
            spec(json!({"upload_quota_bytes_per_account": 20})),
            &["alice"],
        )
        .await;
        let answer = ask_slot(
            &node,
            "alice@example.com/desk",
            "filename='note 1.txt' size='11' content-type='text/plain'",
        )
        .await;
        let (put_url, auth, get_url) = slot_urls(&answer);
        assert_eq!(put_url, get_url);
        // Without the slot's header, or with another length: refused, nothing stored.
        let (status, _, _) = http(
            &node,
            "PUT",
            &put_url,
            &[("content-length", "11")],
            b"hello world",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = http(
            &node,
            "PUT",
            &put_url,
            &[("authorization", &auth), ("content-length", "5")],
            b"hello",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = http(
            &node,
            "PUT",
            &put_url,
            &[
                ("authorization", &auth),
                ("content-length", "11"),
                ("content-type", "image/png"),
            ],
            b"hello world",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "another content type");
        let (status, _, _) = http(&node, "GET", &get_url, &[], b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The real upload.
        let (status, headers, _) = http(
            &node,
            "PUT",
            &put_url,
            &[
                ("authorization", &auth),
                ("content-length", "11"),
                ("content-type", "text/plain"),
            ],
            b"hello world",
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let (status, _, _) = http(
            &node,
            "PUT",
            &put_url,
            &[("authorization", &auth), ("content-length", "11")],
            b"hello world",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "a slot is used once");
        let (status, headers, body) = http(&node, "GET", &get_url, &[], b"").await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"hello world"[..])
        );
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(
            headers[header::CONTENT_DISPOSITION],
            "inline; filename*=UTF-8''note%201.txt"
        );
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("sandbox")
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let (status, headers, body) =
            http(&node, "GET", &get_url, &[("range", "bytes=6-")], b"").await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::PARTIAL_CONTENT, &b"world"[..])
        );
        assert_eq!(headers[header::CONTENT_RANGE], "bytes 6-10/11");
        let (status, headers, body) = http(&node, "HEAD", &get_url, &[], b"").await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(headers[header::CONTENT_LENGTH], "11");
        // The wrong name for the id: not found.
        let (status, _, _) = http(
            &node,
            "GET",
            &get_url.replace("note%201", "other"),
            &[],
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // 11 of 20 bytes used: 10 more do not fit, 9 do.
        let answer = ask_slot(&node, "alice@example.com/desk", "filename='b' size='10'").await;
        assert_eq!(condition(&answer), "resource-constraint");
        let answer = ask_slot(&node, "alice@example.com/desk", "filename='b' size='9'").await;
        slot_urls(&answer);
    }

    #[tokio::test]
    async fn expired_slots_are_refused_and_old_files_expire_with_the_retention() {
        let (node, _dir) =
            node_with_spec(spec(json!({"upload_retention_days": 2})), &["alice"]).await;
        let secret = node.store.node_secret(SECRET).await.unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let late = Claims {
            owner: "alice".into(),
            size: 2,
            content_type: "application/octet-stream".into(),
            expires: unix_now() - 1,
        };
        let url = format!("http://127.0.0.1:5280/upload/example.com/{id}/x");
        let put = |claims: &Claims| {
            let token = format!(
                "Bearer {}",
                claims.sign(secret.as_bytes(), "example.com", id, "x")
            );
            let (node, url) = (node.clone(), url.clone());
            async move {
                http(
                    &node,
                    "PUT",
                    &url,
                    &[("authorization", &token), ("content-length", "2")],
                    b"hi",
                )
                .await
            }
        };
        let (status, _, body) = put(&late).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(String::from_utf8(body).unwrap().contains("expired"));
        let fresh = Claims {
            expires: unix_now() + 60,
            ..late
        };
        assert_eq!(put(&fresh).await.0, StatusCode::CREATED);
        let file = node.settings.node.upload_dir().join("example.com").join(id);
        assert!(file.is_file());
        assert!(
            expire(&node, unix_now() + 86_400).await.is_empty(),
            "one day old: kept"
        );
        assert_eq!(
            expire(&node, unix_now() + 3 * 86_400).await,
            vec![("example.com".to_string(), 1)]
        );
        assert!(!file.exists());
        let (status, _, _) = http(&node, "GET", &url, &[], b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
