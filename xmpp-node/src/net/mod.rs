//! Sockets and TLS: listeners with connection limits, and the task that runs one client
//! connection by moving bytes between the socket and the sans-io stream state machine.

pub mod c2s;
pub mod s2s;
pub mod s2s_resolve;
pub mod s2s_tls;
pub mod sm;
pub mod tls;
