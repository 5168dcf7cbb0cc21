//! Rookery's panel pages: Leptos components rendered to HTML on the server.
//!
//! The server gathers plain data (the view structs below and in [`pages`]), calls a page
//! function, and sends the string. Every action is an HTML form that posts back to the
//! server and is answered with a redirect, so each page works without JavaScript.

use leptos::prelude::*;

mod layout;
pub mod pages;
mod widgets;

pub use layout::Shell;

/// The panel's one stylesheet, served by the panel itself at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("../assets/app.css");
/// The panel's one script: progressive enhancement (copy buttons), never required.
pub const SCRIPT: &str = include_str!("../assets/app.js");
/// Where the script is served.
pub const SCRIPT_PATH: &str = concat!("/assets/app.js?v=", env!("CARGO_PKG_VERSION"));
/// Where the stylesheet is served; the version busts caches when it changes.
pub const STYLESHEET_PATH: &str = concat!("/assets/app.css?v=", env!("CARGO_PKG_VERSION"));

/// What every page needs besides its own content.
#[derive(Clone, Debug, Default)]
pub struct PageCtx {
    /// The `<title>`, before " · Rookery".
    pub title: String,
    /// A stable name for the page, set as `data-page` on `<main>` (tests look for it).
    pub page: &'static str,
    /// The CSRF token every form posts back.
    pub csrf: String,
    /// The signed-in person, if any.
    pub user: Option<NavUser>,
    /// A one-off message from the previous action.
    pub flash: Option<Flash>,
    /// Reload `url` after this many seconds (`<meta http-equiv="refresh">`), for pages that
    /// follow something changing on its own, such as a domain being set up.
    pub refresh: Option<(u32, String)>,
}

/// The signed-in person, as the navigation shows them.
#[derive(Clone, Debug, Default)]
pub struct NavUser {
    pub email: String,
    pub is_admin: bool,
    pub email_verified: bool,
    /// Organisations they belong to.
    pub orgs: Vec<NavOrg>,
    /// The organisation the current page belongs to.
    pub current_org: Option<NavOrg>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NavOrg {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    pub kind: FlashKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashKind {
    Success,
    Info,
    Error,
}

impl FlashKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlashKind::Success => "success",
            FlashKind::Info => "info",
            FlashKind::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(FlashKind::Success),
            "info" => Some(FlashKind::Info),
            "error" => Some(FlashKind::Error),
            _ => None,
        }
    }
}

/// Errors of a submitted form, keyed by field name (`""` for the form as a whole).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormErrors(pub Vec<(&'static str, String)>);

impl FormErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    pub fn get(&self, field: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Renders a page to a complete HTML document.
pub fn render<V, F>(page: F) -> String
where
    F: FnOnce() -> V,
    V: IntoView + 'static,
{
    // Components may use reactive primitives; they need an owner while rendering.
    let owner = Owner::new();
    let body = owner.with(|| page().into_view().to_html());
    format!("<!DOCTYPE html>{body}")
}
