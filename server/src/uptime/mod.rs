pub mod admin;
pub mod calc;
