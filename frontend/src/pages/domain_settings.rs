//! A domain's settings: whether people may create accounts from their XMPP app (XEP-0077),
//! whom the domain talks with (federation: the whole XMPP network, only listed domains, or
//! only itself), its contact addresses (XEP-0157), published by its server for other
//! operators and users, and its own TLS certificate.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, FieldError, FormAlert},
};

/// One kind of contact address, with the addresses as one text (one per line).
#[derive(Clone, Debug, Default)]
pub struct ContactField {
    /// The kind as posted and as the spec names it (`abuse`, `support`, …).
    pub kind: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    pub text: String,
}

/// The domain's own certificate, as the page describes it.
#[derive(Clone, Debug, Default)]
pub struct CertificateView {
    /// The names it is valid for, comma-separated.
    pub names: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub expired: bool,
    /// SHA-256 of the certificate, colon-separated hex.
    pub sha256: String,
}

#[derive(Clone, Debug, Default)]
pub struct SettingsView {
    pub org_id: String,
    pub domain_id: String,
    pub domain: String,
    /// False once the domain is being deleted: the page only shows.
    pub editable: bool,
    /// XEP-0077 in-band registration is on.
    pub registration: bool,
    pub registration_errors: FormErrors,
    /// The federation choice, as stored or as posted: `open`, `allowlist` or `closed`.
    pub federation_mode: String,
    /// The allow-list, one domain per line (as stored or as typed).
    pub federation_allow: String,
    pub federation_errors: FormErrors,
    pub contacts: Vec<ContactField>,
    pub contact_errors: FormErrors,
    /// None: the server's own certificate is used.
    pub certificate: Option<CertificateView>,
    /// The chain as typed into a refused upload (the key is never shown again).
    pub cert_pem: String,
    pub tls_errors: FormErrors,
}

/// A labelled text area with its hint and error, wired like [`crate::widgets::Field`].
#[component]
fn TextArea(
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    #[prop(into)] value: String,
    errors: FormErrors,
    #[prop(default = 3)] rows: u32,
    #[prop(optional)] autocomplete: Option<&'static str>,
    #[prop(optional)] placeholder: Option<&'static str>,
) -> impl IntoView {
    let id = format!("f-{name}");
    let has_error = errors.get(name).is_some();
    let hint_id = format!("{id}-hint");
    let described = if has_error {
        format!("{id}-error {hint_id}")
    } else {
        hint_id.clone()
    };
    view! {
        <div class="field" class:has-error=has_error>
            <label for=id.clone()>{label}</label>
            <textarea
                id=id
                name=name
                rows=rows
                spellcheck="false"
                autocomplete=autocomplete
                placeholder=placeholder
                aria-invalid=has_error.then_some("true")
                aria-describedby=described
            >{value}</textarea>
            <p class="hint" id=hint_id>{hint}</p>
            <FieldError name=name errors=errors/>
        </div>
    }
}

pub fn settings(ctx: PageCtx, v: SettingsView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{}/domains/{}", v.org_id, v.domain_id);
        let frozen = (!v.editable).then(|| view! {
            <div class="alert alert-info" role="status">"This domain is being deleted; its settings can no longer change."</div>
        });

        let r = v.registration_errors.clone();
        let registration = if v.editable {
            view! {
                <FormAlert errors=r.clone()/>
                <form method="post" action=format!("{base}/settings/registration") id="registration-form">
                    <Csrf token=csrf.clone()/>
                    <div class="field checkbox">
                        <label><input type="checkbox" name="registration" value="on" id="registration" checked=v.registration/>" Let people create accounts from their XMPP app"</label>
                        <FieldError name="registration" errors=r.clone()/>
                    </div>
                    <button type="submit" class="button" id="registration-submit">"Save"</button>
                </form>
            }.into_any()
        } else {
            let state = if v.registration { "On" } else { "Off" };
            view! { <p id="registration-state">{state}</p> }.into_any()
        };

        let f = v.federation_errors.clone();
        let federation = if v.editable {
            let mode_error = f.get("federation");
            let choice = |value: &'static str, label: String, hint: String| {
                let id = format!("federation-{value}");
                let hint_id = format!("{id}-hint");
                view! {
                    <label class="choice" for=id.clone()>
                        <input type="radio" name="federation" value=value id=id.clone()
                            checked=v.federation_mode == value aria-describedby=hint_id.clone()/>
                        <span>
                            <span class="choice-label">{label}</span>
                            <span class="hint" id=hint_id>{hint}</span>
                        </span>
                    </label>
                }
            };
            view! {
                <FormAlert errors=f.clone()/>
                <form method="post" action=format!("{base}/settings/federation") id="federation-form">
                    <Csrf token=csrf.clone()/>
                    <fieldset class="field choices" class:has-error=mode_error.is_some()
                        aria-describedby=mode_error.is_some().then_some("f-federation-error")>
                        <legend>"Who the people on this domain can talk with"</legend>
                        {choice("open", "Talk with the whole XMPP network".into(),
                            "Chat with anyone on any XMPP server, and anyone can reach people here. This is how XMPP usually works.".into())}
                        {choice("allowlist", "Only with these domains:".into(),
                            "Messages, contacts and group chats work only with the domains listed below (and within this domain); everything else is refused.".into())}
                        <div class="choice-detail">
                            <TextArea name="federation_allow" label="Domains to talk with" rows=5
                                value=v.federation_allow.clone() errors=f.clone()
                                placeholder="partner.example\nconference.partner.example"
                                hint="One domain per line, at most 100. Names are exact: list a group chat service such as conference.partner.example on its own line. The list is kept if you choose another option."/>
                        </div>
                        {choice("closed", "Only within this domain".into(),
                            format!("Only people on {} (and its own services) talk with each other; the server refuses everything to and from other domains.", v.domain))}
                        <FieldError name="federation" errors=f.clone()/>
                    </fieldset>
                    <button type="submit" class="button" id="federation-submit">"Save"</button>
                </form>
            }.into_any()
        } else {
            let state = match v.federation_mode.as_str() {
                "allowlist" => format!("Only with: {}", v.federation_allow.replace('\n', ", ")),
                "closed" => "Only within this domain".to_string(),
                _ => "With the whole XMPP network".to_string(),
            };
            view! { <p id="federation-state">{state}</p> }.into_any()
        };

        let e = v.contact_errors.clone();
        let contact_form = v.editable.then(|| view! {
            <FormAlert errors=e.clone()/>
            <form method="post" action=format!("{base}/settings/contacts") id="contacts-form">
                <Csrf token=csrf.clone()/>
                {v.contacts.iter().map(|c| view! {
                    <TextArea name=c.kind label=c.label hint=c.hint value=c.text.clone() errors=e.clone()/>
                }).collect_view()}
                <button type="submit" class="button" id="contacts-submit">"Save contact addresses"</button>
            </form>
        });
        let contact_list = (!v.editable).then(|| {
            view! {
                <dl class="facts">
                    {v.contacts.iter().filter(|c| !c.text.is_empty()).map(|c| view! {
                        <dt>{c.label}</dt><dd>{c.text.replace('\n', ", ")}</dd>
                    }).collect_view()}
                </dl>
            }
        });

        let current = match &v.certificate {
            Some(c) => view! {
                <dl class="facts" id="certificate">
                    <dt>"Names"</dt><dd id="certificate-names">{c.names.clone()}</dd>
                    <dt>"Issued by"</dt><dd>{c.issuer.clone()}</dd>
                    <dt>"Valid from"</dt><dd>{c.not_before.clone()}</dd>
                    <dt>"Expires"</dt>
                    <dd id="certificate-expiry">{c.not_after.clone()}{c.expired.then_some(" (expired: clients refuse it; upload a new one)")}</dd>
                    <dt>"SHA-256 fingerprint"</dt><dd class="code" id="certificate-sha256">{c.sha256.clone()}</dd>
                </dl>
                {v.editable.then(|| view! {
                    <ActionButton action=format!("{base}/settings/tls/remove") csrf=csrf.clone()
                        label="Remove certificate" class="button button-danger" id="certificate-remove"/>
                })}
            }.into_any(),
            None => view! {
                <p class="muted" id="no-certificate">"The server presents a self-signed certificate of its own for this domain; clients that check certificates warn about it. Upload one issued for the domain to replace it."</p>
            }.into_any(),
        };
        let t = v.tls_errors.clone();
        let upload = v.editable.then(|| {
            let heading = if v.certificate.is_some() { "Replace the certificate" } else { "Upload a certificate" };
            view! {
                <h3>{heading}</h3>
                <FormAlert errors=t.clone()/>
                <form method="post" action=format!("{base}/settings/tls") id="certificate-form">
                    <Csrf token=csrf.clone()/>
                    <TextArea name="cert_pem" label="Certificate chain (PEM)" rows=8 value=v.cert_pem.clone() errors=t.clone()
                        placeholder="-----BEGIN CERTIFICATE-----"
                        hint="The domain's certificate first, then the intermediate certificates. It must name the domain (or a wildcard covering it) and be valid now."/>
                    <TextArea name="key_pem" label="Private key (PEM)" rows=6 value="" errors=t.clone() autocomplete="off"
                        placeholder="-----BEGIN PRIVATE KEY-----"
                        hint="Unencrypted; it must belong to the certificate. It is stored encrypted and never shown again."/>
                    <button type="submit" class="button" id="certificate-submit">"Save certificate"</button>
                </form>
            }
        });

        view! {
            <Shell ctx=ctx>
                <p><a href=base.clone()>{format!("← {}", v.domain)}</a></p>
                <h1>{format!("Settings of {}", v.domain)}</h1>
                {frozen}
                <section class="card" id="registration-card">
                    <h2>"Creating accounts"</h2>
                    <p class="muted">"When this is on, anyone can create an account on this domain from their XMPP app (in-band registration, XEP-0077), within your plan's account limit; each network address can create only a few accounts an hour. When it is off, only you create accounts, here in the panel. Either way people can change their own password and delete their own account from their app."</p>
                    {registration}
                </section>
                <section class="card" id="federation-card">
                    <h2>"Talking with other domains"</h2>
                    <p class="muted">"XMPP servers talk with each other, as email servers do (federation). Choose whether the people on this domain can reach, and be reached from, the rest of the XMPP network, only some domains, or no other domain at all."</p>
                    {federation}
                </section>
                <section class="card" id="contacts">
                    <h2>"Contact addresses"</h2>
                    <p class="muted">"Published by the server in its service discovery (XEP-0157), so other server operators and users know whom to reach. One address per line: mailto:, xmpp: or https:."</p>
                    {contact_form}
                    {contact_list}
                </section>
                <section class="card" id="tls">
                    <h2>"TLS certificate"</h2>
                    {current}
                    {upload}
                </section>
            </Shell>
        }
    })
}
