//! Outgoing mail. Every message is recorded in the outbox table (the admin's Outbox page);
//! with `smtp_url` configured it is then sent through SMTP by a background task, otherwise
//! it is written to the log, so the demo works offline.

use std::sync::Arc;

use anyhow::Context;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox};
use secrecy::ExposeSecret;
use sqlx::Row;

use crate::{
    clock::{Clock, new_id},
    config::Settings,
    db::Pool,
    telemetry::{Metrics, OutcomeLabels},
};

#[derive(Clone)]
pub struct Mailer {
    db: Pool,
    clock: Clock,
    from: Mailbox,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    metrics: Arc<Metrics>,
}

/// One outbox entry, newest first on the admin page.
#[derive(Clone, Debug)]
pub struct OutboxMail {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub created_at: i64,
}

impl Mailer {
    pub fn new(
        settings: &Settings,
        db: Pool,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .mail_from
            .parse()
            .with_context(|| format!("mail_from {:?} is not an address", settings.mail_from))?;
        let transport = match &settings.smtp_url {
            Some(url) if !url.expose_secret().is_empty() => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .context("smtp_url is not a valid SMTP URL")?
                    .build(),
            ),
            _ => None,
        };
        Ok(Self {
            db,
            clock,
            from,
            transport,
            metrics,
        })
    }

    /// Records the message and sends it (or logs it without SMTP). A failed SMTP delivery is
    /// logged and marked in the outbox; it does not fail the action that sent it.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> anyhow::Result<()> {
        let id = new_id();
        let now = self.clock.now();
        let status = if self.transport.is_some() {
            "queued"
        } else {
            "logged"
        };
        // With SMTP the mailbox is the only place for the message's one-time links; the
        // outbox keeps the rest. Without SMTP the outbox is the mailbox, links and all.
        let recorded = if self.transport.is_some() {
            redact_tokens(&body)
        } else {
            body.clone()
        };
        sqlx::query("INSERT INTO outbox_mail (id, to_address, subject, body, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(to)
            .bind(subject)
            .bind(&recorded)
            .bind(status)
            .bind(now)
            .execute(&self.db)
            .await
            .context("recording mail in the outbox")?;
        let Some(transport) = self.transport.clone() else {
            self.metrics
                .mail
                .get_or_create(&OutcomeLabels { outcome: "logged" })
                .inc();
            tracing::info!(
                to,
                subject,
                "mail (no SMTP configured, see the admin outbox):\n{body}"
            );
            return Ok(());
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to
                .parse()
                .with_context(|| format!("{to:?} is not a mail address"))?)
            .subject(subject)
            .body(body)
            .context("building the mail")?;
        let mailer = self.clone();
        tokio::spawn(async move {
            let result = transport.send(message).await;
            let (status, error, outcome) = match &result {
                Ok(_) => ("sent", None, "sent"),
                Err(e) => ("failed", Some(e.to_string()), "failed"),
            };
            mailer
                .metrics
                .mail
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
            if let Some(e) = &error {
                tracing::error!(error = %e, "sending mail failed");
            }
            let _ = sqlx::query(
                "UPDATE outbox_mail SET status = $1, error = $2, sent_at = $3 WHERE id = $4",
            )
            .bind(status)
            .bind(error)
            .bind(mailer.clock.now())
            .bind(&id)
            .execute(&mailer.db)
            .await;
        });
        Ok(())
    }
}

/// Replaces the panel's secret tokens (43 URL-safe base64 characters) with a marker.
pub fn redact_tokens(body: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut out = String::with_capacity(body.len());
    let mut run = String::new();
    for c in body.chars().chain(std::iter::once(' ')) {
        if is_token_char(c) {
            run.push(c);
            continue;
        }
        if run.len() == 43 {
            out.push_str("[one-time token removed]");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The latest mail, newest first.
#[tracing::instrument(skip_all)]
pub async fn latest(db: &Pool, limit: i64) -> Result<Vec<OutboxMail>, sqlx::Error> {
    sqlx::query("SELECT to_address, subject, body, status, created_at FROM outbox_mail ORDER BY created_at DESC, id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| {
            Ok(OutboxMail {
                to: r.try_get("to_address")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                status: r.try_get("status")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_tokens_are_removed_and_the_rest_kept() {
        let token = crate::clock::new_token();
        let body = format!(
            "Reset here:\nhttps://panel.example.com/password/reset?token={token}\nThanks, Ada-Lovelace_1815"
        );
        let redacted = redact_tokens(&body);
        assert!(!redacted.contains(&token));
        assert_eq!(
            redacted,
            "Reset here:\nhttps://panel.example.com/password/reset?token=[one-time token removed]\nThanks, Ada-Lovelace_1815"
        );
    }
}
