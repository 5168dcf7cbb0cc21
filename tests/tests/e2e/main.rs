//! One test binary for every end-to-end test, so the workspace links it once.

mod browser;
mod cli;
mod node;
mod node_roster;
mod panel;
