//! Sockets and TLS: listeners with connection limits, and the task that runs one client
//! connection by moving bytes between its transport (TCP, TLS, WebSocket) and the sans-io
//! stream state machine. The HTTP port carries WebSocket and BOSH.

pub mod bosh;
pub mod c2s;
pub mod http;
pub mod limits;
pub mod s2s;
pub mod s2s_pool;
pub mod s2s_resolve;
pub mod s2s_tls;
pub mod sm;
pub mod tls;
pub mod websocket;
