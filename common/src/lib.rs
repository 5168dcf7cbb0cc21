//! What the panel and the node share. Connecting to SQLite or PostgreSQL through sqlx's
//! `Any` driver, and layering configuration (defaults, a TOML file, the environment).

pub mod config;
pub mod db;
