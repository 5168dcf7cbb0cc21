//! What the panel and the node share. Connecting to SQLite or PostgreSQL through sqlx's
//! `Any` driver, and layering configuration (defaults, a TOML file, the environment), and the wire types
//! of the node control API.

pub mod config;
pub mod control;
pub mod db;
pub mod dns;
