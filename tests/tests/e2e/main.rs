//! One test binary for every end-to-end test, so the workspace links it once.

mod alerts;
mod api;
mod billing;
mod browser;
mod cli;
mod dns;
mod forms;
mod grace;
mod load;
mod node;
mod node_control;
mod node_features;
mod node_private;
mod node_roster;
mod node_sm;
mod panel;
mod panel_nodes;
mod panels;
mod pool;
mod probe;
mod provisioning;
mod status_page;
mod stripe_fake;
mod uptime;
mod vhost_settings;
mod webhooks;
