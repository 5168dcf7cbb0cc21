//! The REST API for people: an organisation's (or the platform admin's) API keys, with a
//! form that shows a new key exactly once, and the API reference, rendered on the server
//! from the OpenAPI document.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FieldError, FormAlert},
};

/// A key as the list shows it (never the key itself).
#[derive(Clone, Debug, Default)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    /// `rk_abcdefgh`: the start of the key.
    pub prefix: String,
    /// "read-only" or "read and write".
    pub scope: String,
    pub created: String,
    pub created_by: String,
    /// "never" until used.
    pub last_used: String,
    /// "never" without an expiry.
    pub expires: String,
    /// active, revoked or expired.
    pub status: String,
}

/// The API keys page: an organisation's keys, or (admin) the platform's admin keys.
#[derive(Clone, Debug, Default)]
pub struct ApiKeysView {
    pub heading: String,
    pub intro: String,
    /// Where the form posts: `/o/{id}/api-keys` or `/admin/api-keys`.
    pub action: String,
    /// Owners (and admins on their page) create and revoke; members only see.
    pub can_manage: bool,
    pub keys: Vec<ApiKeyRow>,
    /// A key just created: shown this once.
    pub new_key: Option<String>,
    pub name: String,
    pub scope: String,
    pub expires_days: String,
    pub errors: FormErrors,
}

pub fn api_keys(ctx: PageCtx, v: ApiKeysView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let e = v.errors.clone();
        let shown = v.new_key.clone().map(|key| {
            view! {
                <section class="card" id="new-key">
                    <h2>"Your new API key"</h2>
                    <p>"Copy it now: it is shown only this once. We keep only a hash of it."</p>
                    <p><input class="code copy" type="text" readonly value=key id="new-api-key" aria-label="The new API key" spellcheck="false"/></p>
                    <p class="hint">"Send it as " <code>"Authorization: Bearer rk_…"</code> "."</p>
                </section>
            }
        });
        let form = v.can_manage.then(|| {
            let read_write = v.scope != "read";
            let scope_error = e.get("scope").is_some();
            view! {
                <section class="card">
                    <h2>"Create a key"</h2>
                    <FormAlert errors=e.clone()/>
                    <form method="post" action=v.action.clone() class="grid-form" id="create-api-key">
                        <Csrf token=csrf.clone()/>
                        <Field name="name" label="Name" value=v.name.clone() errors=e.clone()
                            hint="What uses it, e.g. billing-sync." required=true/>
                        <div class="field" class:has-error=scope_error>
                            <label for="f-scope">"Access"</label>
                            <select id="f-scope" name="scope" aria-invalid=scope_error.then_some("true") aria-describedby=scope_error.then_some("f-scope-error")>
                                <option value="read_write" selected=read_write>"Read and write"</option>
                                <option value="read" selected=!read_write>"Read-only"</option>
                            </select>
                            <FieldError name="scope" errors=e.clone()/>
                        </div>
                        <Field name="expires_days" label="Expires after (days)" kind="number" value=v.expires_days.clone()
                            errors=e.clone() hint="Empty: never."/>
                        <button type="submit" class="button" id="create-api-key-submit">"Create key"</button>
                    </form>
                </section>
            }
        });
        let list = if v.keys.is_empty() {
            view! {
                <Empty title="No API keys">
                    <p>"There are no API keys yet."</p>
                </Empty>
            }
            .into_any()
        } else {
            let rows = v
                .keys
                .clone()
                .into_iter()
                .map(|k| {
                    let badge = match k.status.as_str() {
                        "active" => "badge badge-ok",
                        "expired" => "badge badge-warn",
                        _ => "badge badge-err",
                    };
                    let revoke = (v.can_manage && k.status == "active").then(|| {
                        view! {
                            <ActionButton action=format!("{}/{}/revoke", v.action, k.id) csrf=csrf.clone()
                                label="Revoke" class="button button-danger button-small"/>
                        }
                    });
                    view! {
                        <tr data-key=k.prefix.clone()>
                            <td>{k.name}</td>
                            <td><code>{format!("{}_…", k.prefix)}</code></td>
                            <td>{k.scope}</td>
                            <td>{k.created}<p class="muted small">{k.created_by}</p></td>
                            <td>{k.last_used}</td>
                            <td>{k.expires}</td>
                            <td><span class=badge>{k.status}</span></td>
                            <td class="row-actions">{revoke}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <table class="table" id="api-keys">
                    <thead><tr>
                        <th>"Name"</th><th>"Key"</th><th>"Access"</th><th>"Created"</th>
                        <th>"Last used"</th><th>"Expires"</th><th>"Status"</th><th></th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            }
            .into_any()
        };
        let members_note = (!v.can_manage).then(|| {
            view! { <p class="hint">"Owners of the organisation create and revoke keys."</p> }
        });
        view! {
            <Shell ctx=ctx>
                <h1>{v.heading.clone()}</h1>
                <p class="muted">{v.intro.clone()} " " <a href="/docs/api">"API reference"</a></p>
                {shown}
                {form}
                {members_note}
                {list}
            </Shell>
        }
    })
}

/// The API reference, grouped by tag.
#[derive(Clone, Debug, Default)]
pub struct ApiDocView {
    pub title: String,
    pub version: String,
    pub description: String,
    pub tags: Vec<ApiTagView>,
    pub schemas: Vec<ApiSchemaView>,
    /// (code, status, title) of every problem the API answers with.
    pub problems: Vec<(String, u16, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct ApiTagView {
    pub name: String,
    pub description: String,
    pub operations: Vec<ApiOperationView>,
}

#[derive(Clone, Debug, Default)]
pub struct ApiOperationView {
    /// The operation id, used as its anchor.
    pub id: String,
    pub method: String,
    pub path: String,
    pub summary: String,
    pub description: String,
    pub params: Vec<ApiFieldView>,
    /// The request body's type (a schema name), if any.
    pub request: Option<String>,
    pub responses: Vec<ApiResponseView>,
}

/// A parameter or a schema's property.
#[derive(Clone, Debug, Default)]
pub struct ApiFieldView {
    pub name: String,
    /// `query`, `path`, `header` for parameters; empty for properties.
    pub location: String,
    pub ty: String,
    pub required: bool,
    pub description: String,
}

#[derive(Clone, Debug, Default)]
pub struct ApiResponseView {
    pub status: String,
    pub description: String,
    /// "Domain (application/json)"
    pub body: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ApiSchemaView {
    pub name: String,
    pub description: String,
    pub fields: Vec<ApiFieldView>,
    /// For enumerations: the values.
    pub values: Vec<String>,
}

fn fields_table(fields: Vec<ApiFieldView>, with_location: bool) -> impl IntoView {
    view! {
        <table class="table">
            <thead><tr>
                <th>"Name"</th>
                {with_location.then(|| view! { <th>"In"</th> })}
                <th>"Type"</th><th>"Required"</th><th>"Description"</th>
            </tr></thead>
            <tbody>
                {fields.into_iter().map(|f| view! {
                    <tr>
                        <td><code>{f.name}</code></td>
                        {with_location.then(|| view! { <td>{f.location.clone()}</td> })}
                        <td><code>{f.ty}</code></td>
                        <td>{if f.required { "yes" } else { "no" }}</td>
                        <td>{f.description}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

pub fn api_reference(ctx: PageCtx, v: ApiDocView) -> String {
    render(move || {
        let toc = v
            .tags
            .iter()
            .map(|t| {
                let ops = t
                    .operations
                    .iter()
                    .map(|o| {
                        view! { <li><a href=format!("#op-{}", o.id)><code>{format!("{} {}", o.method, o.path)}</code></a>" " {o.summary.clone()}</li> }
                    })
                    .collect_view();
                view! { <li><a href=format!("#tag-{}", t.name)>{t.name.clone()}</a><ul>{ops}</ul></li> }
            })
            .collect_view();
        let tags = v
            .tags
            .clone()
            .into_iter()
            .map(|t| {
                let ops = t
                    .operations
                    .into_iter()
                    .map(|o| {
                        let params = (!o.params.is_empty()).then(|| {
                            view! { <h4>"Parameters"</h4>{fields_table(o.params.clone(), true)} }
                        });
                        let request = o.request.clone().map(|r| {
                            view! { <h4>"Request body"</h4><p><code>"application/json"</code>": " <a href=format!("#schema-{r}")>{r.clone()}</a></p> }
                        });
                        let responses = o
                            .responses
                            .into_iter()
                            .map(|r| {
                                let body = r.body.map(|b| {
                                    let name = b.split(' ').next().unwrap_or_default().to_string();
                                    view! { <a href=format!("#schema-{name}")>{b}</a> }
                                });
                                view! { <tr><td><code>{r.status}</code></td><td>{r.description}</td><td>{body}</td></tr> }
                            })
                            .collect_view();
                        view! {
                            <section class="card api-operation" id=format!("op-{}", o.id)>
                                <h3><code>{o.method.clone()}" "{o.path.clone()}</code></h3>
                                <p><strong>{o.summary.clone()}</strong></p>
                                {(!o.description.is_empty()).then(|| view! { <p>{o.description.clone()}</p> })}
                                {params}
                                {request}
                                <h4>"Responses"</h4>
                                <table class="table">
                                    <thead><tr><th>"Status"</th><th>"Meaning"</th><th>"Body"</th></tr></thead>
                                    <tbody>{responses}</tbody>
                                </table>
                            </section>
                        }
                    })
                    .collect_view();
                view! {
                    <h2 id=format!("tag-{}", t.name)>{t.name.clone()}</h2>
                    <p class="muted">{t.description.clone()}</p>
                    {ops}
                }
            })
            .collect_view();
        let schemas = v
            .schemas
            .clone()
            .into_iter()
            .map(|s| {
                let values = (!s.values.is_empty()).then(|| {
                    view! { <p>"One of: " {s.values.iter().map(|x| view! { <code>{x.clone()}</code>" " }).collect_view()}</p> }
                });
                let fields = (!s.fields.is_empty()).then(|| fields_table(s.fields.clone(), false));
                view! {
                    <section class="card" id=format!("schema-{}", s.name)>
                        <h3>{s.name.clone()}</h3>
                        {(!s.description.is_empty()).then(|| view! { <p>{s.description.clone()}</p> })}
                        {values}
                        {fields}
                    </section>
                }
            })
            .collect_view();
        let problems = v
            .problems
            .clone()
            .into_iter()
            .map(|(code, status, title)| {
                let anchor = format!("problem-{code}");
                view! { <tr id=anchor><td><code>{code}</code></td><td>{status}</td><td>{title}</td></tr> }
            })
            .collect_view();
        view! {
            <Shell ctx=ctx>
                <h1>{format!("{} (version {})", v.title, v.version)}</h1>
                <p>{v.description.clone()}</p>
                <p>"Machine-readable: " <a href="/api/v1/openapi.json"><code>"/api/v1/openapi.json"</code></a>
                    " (OpenAPI 3.1). Base URL: " <code>"/api/v1"</code>"."</p>
                <nav aria-label="Operations"><ul>{toc}<li><a href="#schemas">"Schemas"</a></li><li><a href="#problems">"Problems"</a></li></ul></nav>
                {tags}
                <h2 id="schemas">"Schemas"</h2>
                {schemas}
                <h2 id="problems">"Problems"</h2>
                <p>"Every error is " <code>"application/problem+json"</code> " (RFC 9457): "
                    <code>"type"</code> " (a link to this table), " <code>"title"</code> ", " <code>"status"</code> ", "
                    <code>"detail"</code> ", the stable " <code>"code"</code> " below, " <code>"request_id"</code>
                    " and, for " <code>"validation_failed"</code> ", " <code>"errors"</code> " per field."</p>
                <table class="table" id="problem-codes">
                    <thead><tr><th>"Code"</th><th>"Status"</th><th>"Meaning"</th></tr></thead>
                    <tbody>{problems}</tbody>
                </table>
            </Shell>
        }
    })
}
