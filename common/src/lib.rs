//! What the panel and the node share. Today: connecting to SQLite or PostgreSQL through
//! sqlx's `Any` driver with the same settings on both sides.

pub mod db;
