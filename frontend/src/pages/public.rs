//! Pages for people who are not signed in yet: the landing page with the plans, sign-up,
//! log-in, forgotten and reset passwords, and invitations to join an organisation.

use leptos::prelude::*;

use super::PlanView;
use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{Csrf, Field, FormAlert},
};

pub fn landing(ctx: PageCtx, plans: Vec<PlanView>) -> String {
    let signed_in = ctx.user.is_some();
    render(move || {
        let cards = if plans.is_empty() {
            view! { <p class="muted">"Plans are being prepared. Sign up now and you can order as soon as they are published."</p> }.into_any()
        } else {
            view! {
                <div class="plans">
                    {plans.into_iter().map(|p| view! {
                        <article class="plan card">
                            <h3>{p.name.clone()}</h3>
                            <p class="price">{p.price_label()}</p>
                            <p>{p.description.clone()}</p>
                            <ul class="plan-limits">
                                <li>{format!("{} chat accounts", p.max_accounts)}</li>
                                <li>{format!("{} simultaneous connections", p.max_sessions)}</li>
                                <li>{format!("{} MB of storage", p.storage_mb)}</li>
                            </ul>
                        </article>
                    }).collect_view()}
                </div>
            }
            .into_any()
        };
        view! {
            <Shell ctx=ctx>
                <section class="hero">
                    <h1>"Your own chat service, on your own domain."</h1>
                    <p class="lead">
                        "Rookery runs XMPP for you@yourcompany.com: encrypted, federated with the whole XMPP network, "
                        "working with Conversations, Monal, Gajim, Dino and every standard client. "
                        "We keep it running and show you its uptime."
                    </p>
                    {(!signed_in).then(|| view! {
                        <p class="cta">
                            <a class="button button-large" href="/signup">"Create your account"</a>
                            " "
                            <a href="/login">"I already have one"</a>
                        </p>
                    })}
                </section>
                <section class="features" aria-label="Why Rookery">
                    <article class="card">
                        <h2>"Your domain, your addresses"</h2>
                        <p>"Chat addresses like the email ones you already have. Point three DNS records at us; moving servers never needs you again."</p>
                    </article>
                    <article class="card">
                        <h2>"Every client, every device"</h2>
                        <p>"Standard XMPP with the modern extensions: message archive, multi-device, push, group chats, file sharing, end-to-end encryption."</p>
                    </article>
                    <article class="card">
                        <h2>"Uptime you can see"</h2>
                        <p>"A robot logs in to your domain every minute. You see the same uptime figures and incidents we do."</p>
                    </article>
                </section>
                <section aria-labelledby="plans-heading">
                    <h2 id="plans-heading">"Plans"</h2>
                    {cards}
                </section>
            </Shell>
        }
    })
}

/// What the sign-up form shows again after a failed attempt.
#[derive(Clone, Debug, Default)]
pub struct SignupView {
    pub email: String,
    pub org_name: String,
    pub errors: FormErrors,
    /// Set when the person came from an invitation link: where to go after signing up.
    pub next: Option<String>,
}

pub fn signup(ctx: PageCtx, form: SignupView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"Create your account"</h1>
                    <p class="muted">"You get an organisation for your domains and team. Already registered? " <a href="/login">"Log in"</a>"."</p>
                    <FormAlert errors=form.errors.clone()/>
                    <form method="post" action="/signup" novalidate>
                        <Csrf token=csrf/>
                        {form.next.clone().map(|n| view! { <input type="hidden" name="next" value=n/> })}
                        <Field name="email" label="Email" kind="email" value=form.email.clone() errors=form.errors.clone() autocomplete="email" required=true autofocus=true/>
                        <Field name="password" label="Password" kind="password" errors=form.errors.clone() autocomplete="new-password" required=true
                            hint="At least 10 characters. Long passphrases are best; common passwords are refused."/>
                        <Field name="org_name" label="Organisation name (optional)" value=form.org_name.clone() errors=form.errors.clone() autocomplete="organization"
                            hint="Your company or project. You can invite your team later."/>
                        <button type="submit" class="button button-large" id="signup-submit">"Create account"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct LoginView {
    pub email: String,
    pub error: Option<String>,
    pub next: Option<String>,
}

pub fn login(ctx: PageCtx, form: LoginView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        // After a failed attempt the address is filled in: start at the password.
        let email_empty = form.email.is_empty();
        let mut errors = FormErrors::default();
        if let Some(e) = form.error.clone() {
            errors.add("", e);
        }
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"Log in"</h1>
                    <FormAlert errors=errors/>
                    <form method="post" action="/login">
                        <Csrf token=csrf/>
                        {form.next.clone().map(|n| view! { <input type="hidden" name="next" value=n/> })}
                        <Field name="email" label="Email" kind="email" value=form.email.clone() autocomplete="username" required=true autofocus=email_empty/>
                        <Field name="password" label="Password" kind="password" autocomplete="current-password" required=true autofocus=!email_empty/>
                        <button type="submit" class="button button-large" id="login-submit">"Log in"</button>
                    </form>
                    <p class="form-links">
                        <a href="/password/forgot">"Forgot your password?"</a>
                        " · "
                        <a href="/signup">"Create an account"</a>
                    </p>
                </section>
            </Shell>
        }
    })
}

pub fn forgot_password(ctx: PageCtx, email: String, errors: FormErrors) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"Reset your password"</h1>
                    <p>"Enter the email address of your account and we will send you a link to choose a new password."</p>
                    <FormAlert errors=errors.clone()/>
                    <form method="post" action="/password/forgot">
                        <Csrf token=csrf/>
                        <Field name="email" label="Email" kind="email" value=email errors=errors autocomplete="email" required=true autofocus=true/>
                        <button type="submit" class="button" id="forgot-submit">"Send reset link"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}

pub fn reset_password(ctx: PageCtx, token: String, errors: FormErrors) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"Choose a new password"</h1>
                    <FormAlert errors=errors.clone()/>
                    <form method="post" action="/password/reset">
                        <Csrf token=csrf/>
                        <input type="hidden" name="token" value=token/>
                        <Field name="password" label="New password" kind="password" errors=errors autocomplete="new-password" required=true autofocus=true
                            hint="At least 10 characters. Common passwords are refused."/>
                        <button type="submit" class="button" id="reset-submit">"Set new password"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}

/// An invitation as the person following its link sees it.
#[derive(Clone, Debug)]
pub struct InvitationView {
    pub token: String,
    pub org_name: String,
    pub email: String,
    pub role: String,
    pub state: InvitationState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvitationState {
    /// Not signed in: log in or sign up first.
    SignInFirst,
    /// Signed in as someone else than the invited address.
    WrongAccount(String),
    /// Signed in as the invited person: they can accept.
    CanAccept,
}

pub fn invitation(ctx: PageCtx, inv: InvitationView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let next = format!("/invitations/{}", inv.token);
        let body = match inv.state.clone() {
            InvitationState::SignInFirst => view! {
                <p>"Log in or create an account with " <strong>{inv.email.clone()}</strong> " to accept."</p>
                <p class="cta">
                    <a class="button" href=format!("/signup?next={}&email={}", urlencode(&next), urlencode(&inv.email))>"Create account"</a>
                    " "
                    <a class="button button-quiet" href=format!("/login?next={}", urlencode(&next))>"Log in"</a>
                </p>
            }.into_any(),
            InvitationState::WrongAccount(current) => view! {
                <div class="alert alert-error" role="alert">
                    {format!("This invitation is for {}, but you are signed in as {}. Log out and sign in with the invited address.", inv.email, current)}
                </div>
            }.into_any(),
            InvitationState::CanAccept => view! {
                <form method="post" action=format!("/invitations/{}", inv.token)>
                    <Csrf token=csrf/>
                    <button type="submit" class="button" id="accept-invitation">"Join " {inv.org_name.clone()}</button>
                </form>
            }.into_any(),
        };
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"Join " {inv.org_name.clone()}</h1>
                    <p>{format!("You have been invited as {} of {}.", inv.role, inv.org_name)}</p>
                    {body}
                </section>
            </Shell>
        }
    })
}

/// Minimal percent-encoding for query values built in links.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
