//! Small building blocks shared by the pages: labelled form fields, the CSRF field,
//! submit buttons and empty states.

use leptos::prelude::*;

use crate::FormErrors;

/// The hidden field that carries the CSRF token in every form.
#[component]
pub fn Csrf(token: String) -> impl IntoView {
    view! { <input type="hidden" name="csrf" value=token/> }
}

/// A labelled input with its error message and hint, wired with `aria-describedby`.
#[component]
pub fn Field(
    name: &'static str,
    label: &'static str,
    #[prop(default = "text")] kind: &'static str,
    #[prop(optional, into)] value: String,
    #[prop(optional)] errors: Option<FormErrors>,
    #[prop(optional)] hint: Option<&'static str>,
    #[prop(optional)] autocomplete: Option<&'static str>,
    #[prop(optional)] required: bool,
    #[prop(optional)] autofocus: bool,
) -> impl IntoView {
    let id = format!("f-{name}");
    let error = errors.and_then(|e| e.get(name));
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (error.is_some(), hint.is_some()) {
        (true, true) => Some(format!("{error_id} {hint_id}")),
        (true, false) => Some(error_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    let has_error = error.is_some();
    let invalid = has_error.then_some("true");
    view! {
        <div class="field" class:has-error=has_error>
            <label for=id.clone()>{label}</label>
            <input
                id=id
                name=name
                type=kind
                value=value
                autocomplete=autocomplete
                required=required
                autofocus=autofocus
                aria-invalid=invalid
                aria-describedby=described
            />
            {hint.map(|h| view! { <p class="hint" id=hint_id>{h}</p> })}
            {error.map(|e| view! { <p class="field-error" id=error_id>{e}</p> })}
        </div>
    }
}

/// The error of a field drawn by hand (a select, a group of checkboxes), with the id
/// `f-<name>-error` its control names in `aria-describedby`.
#[component]
pub fn FieldError(name: &'static str, errors: FormErrors) -> impl IntoView {
    errors.get(name).map(|e| {
        view! { <p class="field-error" id=format!("f-{name}-error")>{e}</p> }
    })
}

/// The message for the form as a whole (errors under the `""` key).
#[component]
pub fn FormAlert(errors: FormErrors) -> impl IntoView {
    errors.get("").map(|e| {
        view! { <div class="alert alert-error" role="alert">{e}</div> }
    })
}

/// A POST form with just a button, for one-click actions (log out, remove, revoke).
#[component]
pub fn ActionButton(
    action: String,
    csrf: String,
    label: &'static str,
    #[prop(default = "button")] class: &'static str,
    #[prop(optional)] id: Option<&'static str>,
    #[prop(optional)] confirm_field: Option<(&'static str, String)>,
) -> impl IntoView {
    view! {
        <form method="post" action=action class="inline-form">
            <Csrf token=csrf/>
            {confirm_field.map(|(n, v)| view! { <input type="hidden" name=n value=v/> })}
            <button type="submit" class=class id=id>{label}</button>
        </form>
    }
}

/// What a list shows when it has nothing in it yet.
#[component]
pub fn Empty(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="empty">
            <h2>{title}</h2>
            {children()}
        </div>
    }
}

/// A small bar chart drawn on the server as SVG: one bar per value, each with a tooltip
/// (`<title>`), no script and no inline style (the CSP forbids both).
#[component]
pub fn BarChart(
    /// What the chart shows, for screen readers.
    label: String,
    /// (tooltip, value) per bar, oldest first.
    bars: Vec<(String, i64)>,
) -> impl IntoView {
    let (width, height, gap) = (300.0_f64, 60.0_f64, 1.0_f64);
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let n = bars.len().max(1) as f64;
    let bar_width = ((width - gap * (n - 1.0)) / n).max(1.0);
    view! {
        <svg class="chart" viewBox=format!("0 0 {width} {height}") role="img" aria-label=label preserveAspectRatio="none">
            {bars.into_iter().enumerate().map(|(i, (tip, v))| {
                let h = if v > 0 { (v as f64 / max * height).max(1.0) } else { 0.0 };
                let x = i as f64 * (bar_width + gap);
                view! {
                    <rect class="chart-bar" x=format!("{x:.1}") y=format!("{:.1}", height - h) width=format!("{bar_width:.1}") height=format!("{h:.1}")>
                        <title>{tip}</title>
                    </rect>
                }
            }).collect_view()}
        </svg>
    }
}
