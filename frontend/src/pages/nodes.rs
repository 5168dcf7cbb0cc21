//! The node pool (admins): every node with its state, health, capacity and load; a node's
//! page with its domains; join tokens; the audit log.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FormAlert},
};

#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    /// `host:port` clients connect to.
    pub address: String,
    pub control_url: String,
    /// active, cordoned or draining.
    pub state: String,
    /// up, down or unknown.
    pub health: String,
    pub domains: i64,
    pub capacity_vhosts: i64,
    pub sessions: i64,
    pub capacity_sessions: i64,
    pub cpu: String,
    pub memory: String,
    pub last_heartbeat: String,
    pub labels: String,
    pub version: String,
    pub last_error: Option<String>,
}

impl NodeView {
    fn vhost_pct(&self) -> u32 {
        pct(self.domains, self.capacity_vhosts)
    }

    fn session_pct(&self) -> u32 {
        pct(self.sessions, self.capacity_sessions)
    }
}

fn pct(used: i64, max: i64) -> u32 {
    if max <= 0 {
        100
    } else {
        ((used.max(0) as f64 / max as f64) * 100.0)
            .round()
            .min(100.0) as u32
    }
}

#[derive(Clone, Debug, Default)]
pub struct TokenView {
    pub note: String,
    pub created: String,
    pub expires: String,
    /// "unused", "used by <node>", "expired".
    pub status: String,
}

#[derive(Clone, Debug, Default)]
pub struct PoolView {
    pub nodes: Vec<NodeView>,
    pub fill_pct: u32,
    pub headroom_pct: u32,
    pub over_headroom: bool,
    /// There are nodes, but none takes new domains (all cordoned, draining or down).
    pub none_usable: bool,
    pub waiting_domains: i64,
    pub tokens: Vec<TokenView>,
    /// A token just created: shown once, with the command that uses it.
    pub new_token: Option<String>,
    pub join_command: Option<String>,
    /// The join token form as typed, when it was refused.
    pub note_input: String,
    pub errors: FormErrors,
}

/// A capacity bar: a native `<progress>` (the CSP allows no inline styles).
fn bar(label: String, percent: u32) -> impl IntoView {
    let class = if percent >= 90 {
        "bar bar-high"
    } else if percent >= 70 {
        "bar bar-mid"
    } else {
        "bar"
    };
    let title = label.clone();
    view! {
        <progress class=class max="100" value=percent.to_string() aria-label=label title=title>{format!("{percent}%")}</progress>
    }
}

fn state_badge(state: &str, health: &str) -> impl IntoView + use<> {
    let (class, text) = match (state, health) {
        (_, "down") => ("badge badge-err", "down".to_string()),
        ("active", "up") => ("badge badge-ok", "active".to_string()),
        ("active", _) => ("badge badge-warn", "active, not yet polled".to_string()),
        (s, _) => ("badge badge-warn", s.to_string()),
    };
    let attr = text.clone();
    view! { <span class=class data-node-state=attr>{text}</span> }
}

pub fn pool(ctx: PageCtx, p: PoolView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let warning = p.over_headroom.then(|| {
            let text = if p.none_usable {
                "No node takes new domains: every node is cordoned, draining or down. Uncordon or add a node; new domains wait until then.".to_string()
            } else {
                format!("The pool is {}% full, past its {}% headroom line: add nodes before they are needed.", p.fill_pct, 100 - p.headroom_pct.min(100))
            };
            view! { <div class="alert alert-error" role="alert" id="headroom-warning">{text}</div> }
        });
        let waiting = (p.waiting_domains > 0).then(|| view! {
            <div class="alert alert-info" role="status">{format!("{} domain(s) wait for a node; see the domain pages for why.", p.waiting_domains)}</div>
        });
        let new_token = p.new_token.clone().map(|t| view! {
            <section class="card" id="new-token">
                <h2>"Join token created"</h2>
                <p>"Copy it now: it is shown only once. It works for one node, once, until it expires."</p>
                <pre class="code" id="join-token">{t}</pre>
                {p.join_command.clone().map(|c| view! { <p>"On the new node run:"</p><pre class="code" id="join-command">{c}</pre> })}
            </section>
        });
        let list = if p.nodes.is_empty() {
            view! { <Empty title="No nodes in the pool"><p>"Create a join token below and run " <code>"rookery-node join"</code> " on the new machine."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="nodes">
                    <thead><tr>
                        <th scope="col">"Node"</th><th scope="col">"State"</th><th scope="col">"Domains"</th>
                        <th scope="col">"Sessions"</th><th scope="col">"CPU / memory"</th><th scope="col">"Last heartbeat"</th>
                    </tr></thead>
                    <tbody>
                        {p.nodes.iter().map(|n| {
                            let (vp, sp) = (n.vhost_pct(), n.session_pct());
                            view! {
                                <tr data-node=n.name.clone()>
                                    <td><a href=format!("/admin/nodes/{}", n.id)>{n.name.clone()}</a><br/><span class="muted small">{n.address.clone()}</span></td>
                                    <td>{state_badge(&n.state, &n.health)}</td>
                                    <td>{format!("{} / {}", n.domains, n.capacity_vhosts)}{bar(format!("{vp}% of domain capacity"), vp)}</td>
                                    <td>{format!("{} / {}", n.sessions, n.capacity_sessions)}{bar(format!("{sp}% of session capacity"), sp)}</td>
                                    <td>{n.cpu.clone()}<br/><span class="muted small">{n.memory.clone()}</span></td>
                                    <td>{n.last_heartbeat.clone()}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        let tokens = (!p.tokens.is_empty()).then(|| view! {
            <table class="table">
                <thead><tr><th scope="col">"Join token"</th><th scope="col">"Created"</th><th scope="col">"Expires"</th><th scope="col">"Status"</th></tr></thead>
                <tbody>
                    {p.tokens.iter().cloned().map(|t| view! {
                        <tr><td>{t.note}</td><td>{t.created}</td><td>{t.expires}</td><td>{t.status}</td></tr>
                    }).collect_view()}
                </tbody>
            </table>
        });
        view! {
            <Shell ctx=ctx>
                <h1>"Nodes"</h1>
                <p class="muted">{format!("The XMPP nodes customer domains are placed on. The pool is {}% full.", p.fill_pct)}</p>
                {warning}
                {waiting}
                {new_token}
                {list}
                <section class="card">
                    <h2>"Add a node"</h2>
                    <FormAlert errors=p.errors.clone()/>
                    <form method="post" action="/admin/nodes/tokens" class="form-row">
                        <Csrf token=csrf/>
                        <Field name="note" label="What it is for" value=p.note_input.clone() errors=p.errors.clone()
                            hint="At most 100 characters, e.g. node-3 in eu-west."/>
                        <button type="submit" class="button" id="token-submit">"Create join token"</button>
                    </form>
                    {tokens}
                </section>
                <p><a href="/admin/audit">"Audit log"</a></p>
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct NodeDomainView {
    pub domain: String,
    pub org: String,
    pub state: String,
    /// "serving", "moving here from X", "moving away to X".
    pub placement: String,
    pub generation: String,
    pub waiting: Option<String>,
}

pub fn node(ctx: PageCtx, n: NodeView, domains: Vec<NodeDomainView>) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/admin/nodes/{}", n.id);
        let cordon = match n.state.as_str() {
            "active" => view! { <ActionButton action=format!("{base}/cordon") csrf=csrf.clone() label="Cordon" class="button button-quiet" id="cordon"/> }.into_any(),
            _ => view! { <ActionButton action=format!("{base}/uncordon") csrf=csrf.clone() label="Make active again" class="button button-quiet" id="uncordon"/> }.into_any(),
        };
        let drain = (n.state != "draining").then(|| view! {
            <ActionButton action=format!("{base}/drain") csrf=csrf.clone() label="Drain" class="button button-quiet" id="drain"/>
        });
        let remove = (domains.is_empty()).then(|| view! {
            <ActionButton action=format!("{base}/remove") csrf=csrf.clone() label="Remove from the pool" class="button button-danger" id="remove"/>
        });
        let list = if domains.is_empty() {
            view! { <Empty title="No domains on this node"><p>"Domains placed here appear in this list."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="node-domains">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"Organisation"</th><th scope="col">"State"</th><th scope="col">"Placement"</th><th scope="col">"Generation"</th></tr></thead>
                    <tbody>
                        {domains.into_iter().map(|d| { let key = d.domain.clone(); view! {
                            <tr data-domain=key>
                                <td>{d.domain}</td><td>{d.org}</td><td>{d.state}</td>
                                <td>{d.placement}{d.waiting.map(|w| view! { <br/><span class="muted small">{w}</span> })}</td>
                                <td>{d.generation}</td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        let (vp, sp) = (n.vhost_pct(), n.session_pct());
        view! {
            <Shell ctx=ctx>
                <p><a href="/admin/nodes">"← All nodes"</a></p>
                <h1>{n.name.clone()} {state_badge(&n.state, &n.health)}</h1>
                {n.last_error.clone().filter(|_| n.health != "up").map(|e| view! { <div class="alert alert-error" role="alert">{format!("Last poll failed: {e}")}</div> })}
                <section class="card">
                    <dl class="facts">
                        <dt>"Clients connect to"</dt><dd>{n.address.clone()}</dd>
                        <dt>"Control API"</dt><dd>{n.control_url.clone()}</dd>
                        <dt>"Domains"</dt><dd>{format!("{} of {}", n.domains, n.capacity_vhosts)}{bar(format!("{vp}% of domain capacity"), vp)}</dd>
                        <dt>"Sessions"</dt><dd>{format!("{} of {}", n.sessions, n.capacity_sessions)}{bar(format!("{sp}% of session capacity"), sp)}</dd>
                        <dt>"CPU"</dt><dd>{n.cpu.clone()}</dd>
                        <dt>"Memory"</dt><dd>{n.memory.clone()}</dd>
                        <dt>"Labels"</dt><dd>{n.labels.clone()}</dd>
                        <dt>"Version"</dt><dd>{n.version.clone()}</dd>
                        <dt>"Last heartbeat"</dt><dd>{n.last_heartbeat.clone()}</dd>
                    </dl>
                    <div class="actions">{cordon}{drain}{remove}</div>
                    <p class="hint">"Cordoned nodes keep their domains but get no new ones. Draining moves every domain to other nodes; their clients are sent to the new node. A node can be removed once it holds no domain."</p>
                </section>
                <h2>"Domains"</h2>
                {list}
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct AuditView {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

pub fn audit(ctx: PageCtx, rows: Vec<AuditView>) -> String {
    render(move || {
        let list = if rows.is_empty() {
            view! { <Empty title="Nothing recorded yet"><p>"Admin actions on the node pool appear here."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="audit">
                    <thead><tr><th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Action"</th><th scope="col">"On"</th><th scope="col">"Details"</th></tr></thead>
                    <tbody>
                        {rows.into_iter().map(|r| view! {
                            <tr><td>{r.at}</td><td>{r.actor}</td><td><code>{r.action}</code></td><td>{r.target}</td><td>{r.details}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Audit log"</h1>
                <p class="muted">"Every admin action, newest first."</p>
                {list}
            </Shell>
        }
    })
}

#[derive(Clone, Debug)]
pub struct UptimeRow {
    pub domain: String,
    pub node: String,
    /// The node's health from its heartbeats, e.g. "up · heartbeat 4 s ago".
    pub node_health: String,
    /// "up", "down" or "" (unknown), for the node badge.
    pub node_status: String,
    /// "incident", "down", "up" or "unknown".
    pub status: String,
    pub detail: String,
    pub uptime_24h: String,
}

/// A probe location on the Uptime page.
#[derive(Clone, Debug)]
pub struct LocationView {
    pub id: String,
    pub name: String,
    /// "panel" for the panel's own prober, else "remote".
    pub kind: String,
    pub token_prefix: String,
    pub last_seen: String,
    pub address: String,
    /// "active", "silent" (not heard from lately, not counted) or "revoked".
    pub status: String,
}

#[derive(Clone, Debug, Default)]
pub struct UptimeOverview {
    pub rows: Vec<UptimeRow>,
    /// Domains in each status, over all pages: (incident, down, up, unknown).
    pub counts: (usize, usize, usize, usize),
    pub page: usize,
    pub pages: usize,
    pub locations: Vec<LocationView>,
    /// "A round is down when 2 of the 3 active locations fail."
    pub quorum: String,
    /// A location just created: (name, token, command line).
    pub new_location: Option<(String, String, String)>,
    pub error: Option<String>,
    /// The name the admin typed (kept when it was refused).
    pub name_input: String,
}

/// Every domain's status, worst first, beside its node's heartbeat; the probe locations.
pub fn uptime_overview(ctx: PageCtx, v: UptimeOverview) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let list = if v.rows.is_empty() {
            view! { <Empty title="No domains yet"><p>"Domains appear here once they are placed on a node."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="uptime-overview">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"Status"</th><th scope="col">"Last 24 hours"</th><th scope="col">"Node and its heartbeat"</th></tr></thead>
                    <tbody>
                        {v.rows.into_iter().map(|r| {
                            let class = match r.status.as_str() {
                                "up" => "badge badge-ok",
                                "incident" | "down" => "badge badge-err",
                                _ => "badge",
                            };
                            let node_class = match r.node_status.as_str() {
                                "up" => "badge badge-ok",
                                "down" => "badge badge-err",
                                _ => "badge",
                            };
                            let key = r.domain.clone();
                            let node_key = r.node_status.clone();
                            view! {
                                <tr data-domain=key>
                                    <td>{r.domain}</td>
                                    <td><span class=class>{r.status}</span><br/><span class="muted small">{r.detail}</span></td>
                                    <td>{r.uptime_24h}</td>
                                    <td data-node-health=node_key>{r.node}" "<span class=node_class>{r.node_health}</span></td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        let (incident, down, up, unknown) = v.counts;
        let pager = (v.pages > 1).then(|| view! {
            <nav class="pager" aria-label="Pages">
                {(v.page > 1).then(|| view! { <a href=format!("/admin/uptime?page={}", v.page - 1) rel="prev">"Previous"</a> })}
                <span class="muted">{format!(" Page {} of {} ", v.page, v.pages)}</span>
                {(v.page < v.pages).then(|| view! { <a href=format!("/admin/uptime?page={}", v.page + 1) rel="next">"Next"</a> })}
            </nav>
        });
        let new_location = v.new_location.clone().map(|(name, token, command)| {
            view! {
                <section class="card" id="new-location">
                    <h2>{format!("Probe location “{name}” created")}</h2>
                    <p>"Copy the token now: it is shown only once."</p>
                    <pre class="code" id="location-token">{token}</pre>
                    <p>"On the machine that probes from there, run:"</p>
                    <pre class="code" id="location-command">{command}</pre>
                </section>
            }
        });
        let error = v.error.clone().map(
            |e| view! { <div class="alert alert-error" role="alert" id="location-error">{e}</div> },
        );
        let locations = view! {
            <table class="table" id="locations">
                <thead><tr><th scope="col">"Location"</th><th scope="col">"Status"</th><th scope="col">"Last seen"</th><th scope="col"></th></tr></thead>
                <tbody>
                    {v.locations.into_iter().map(|l| {
                        let class = match l.status.as_str() { "active" => "badge badge-ok", "revoked" => "badge", _ => "badge badge-err" };
                        let revoke = (l.kind == "remote" && l.status != "revoked").then(|| view! {
                            <ActionButton action=format!("/admin/uptime/locations/{}/revoke", l.id) csrf=csrf.clone() label="Revoke" class="button button-quiet" id="revoke-location"/>
                        });
                        view! {
                            <tr data-location=l.name.clone()>
                                <td>{l.name.clone()}<br/><span class="muted small">{if l.kind == "panel" { "the panel's own prober".to_string() } else { format!("remote · token {}…", l.token_prefix) }}</span></td>
                                <td><span class=class>{l.status.clone()}</span></td>
                                <td>{l.last_seen.clone()}<br/><span class="muted small">{l.address.clone()}</span></td>
                                <td>{revoke}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Uptime"</h1>
                <p class="muted">"Every domain as the prober sees it, worst first: open incidents, failing, then by the last 24 hours; beside it, its node's health from the node's own heartbeats, so a whole node down shows apart from a single domain."</p>
                <p id="uptime-counts">{format!("{incident} with an open incident · {down} failing · {up} up · {unknown} not checked yet")}</p>
                {list}
                {pager}
                <section class="card" id="probe-locations">
                    <h2>"Probe locations"</h2>
                    <p class="muted">{v.quorum.clone()}</p>
                    {new_location}
                    {error}
                    {locations}
                    <form method="post" action="/admin/uptime/locations" class="form-row">
                        <Csrf token=csrf.clone()/>
                        <div class="field">
                            <label for="f-location">"New location"</label>
                            <input id="f-location" name="name" type="text" maxlength="40" value=v.name_input.clone() placeholder="e.g. eu-west" required/>
                        </div>
                        <button type="submit" class="button" id="location-submit">"Create location and token"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}
