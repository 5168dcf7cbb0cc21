pub mod stripe;
pub mod webhook;
