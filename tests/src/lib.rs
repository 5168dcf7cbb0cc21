//! Test harness shared by the end-to-end tests: fresh databases on either engine, the panel
//! started in-process or as a real process, a headless Chromium driven over WebDriver, and a
//! small XMPP client (TLS + SCRAM) for tests and the load generator, and Prosody and ejabberd
//! as federation peers.

pub mod app;
pub mod browser;
pub mod db;
pub mod fake_stripe;
pub mod node;
pub mod peers;
pub mod pool;
pub mod process;
pub mod test_ca;
pub mod xmpp;
