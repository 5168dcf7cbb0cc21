//! Rookery's panel: the web application customers, resellers and platform admins use.
//!
//! `startup` builds the application from [`config::Settings`]; each feature lives in its own
//! module with its HTTP routes, its SQL (`db`) and its rules:
//! - `auth`: sign-up, log-in, sessions, CSRF, password reset, email confirmation;
//! - `orgs`: organisations (tenants), their pages and their team;
//! - `account`: the signed-in person's own settings;
//! - `admin`: the platform admin's pages and the `rookery admin` commands;
//! - `domains`: customer domains and their chat accounts;
//! - `status_page`: a domain's optional public status page;
//! - `nodes`: the node pool, enrollment, placement, the reconciler and the poller;
//! - `seal`: secrets the panel keeps, sealed under its secret key;
//! - `mail`: outgoing mail (SMTP, or the log and the admin outbox);
//! - `alerts`: incident and node alerts by email, signed webhook and XMPP, from an outbox;
//! - `api`: the REST API under `/api/v1` (API keys, problems, pagination, idempotency,
//!   OpenAPI) and its pages (API keys, the reference at `/docs/api`);
//! - `ops`: health, readiness and metrics.

pub mod account;
pub mod admin;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod db;
pub mod dns;
pub mod domains;
pub mod error;
pub mod lease;
pub mod mail;
pub mod nodes;
pub mod ops;
pub mod orgs;
pub mod pages;
pub mod probe;
pub mod seal;
pub mod startup;
pub mod state;
pub mod status_page;
pub mod telemetry;
pub mod uptime;

pub use startup::Application;
pub use state::AppState;
