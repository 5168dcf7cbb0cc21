//! Test harness shared by the end-to-end tests: fresh databases on either engine, the panel
//! started in-process or as a real process, and a headless Chromium driven over WebDriver.

pub mod app;
pub mod browser;
pub mod db;
pub mod node;
pub mod process;
