//! The panel over HTTP, as a browser without JavaScript uses it: sign-up, log-in, sessions,
//! CSRF, tenancy, password reset, email confirmation, invitations, admin pages and the
//! operations endpoints. Each test gets its own panel and database (SQLite or PostgreSQL,
//! as the run is for).

use rookery_tests::app::{
    PASSWORD, TestApp, csrf_in, location, spawn_app, spawn_app_with, unique_email,
};

async fn users(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) AS n FROM users").await
}

#[tokio::test]
async fn a_new_customer_signs_up_and_lands_on_their_organisations_dashboard() {
    let app = spawn_app().await;
    let c = app.client();
    let email = unique_email("ada");
    let r = c
        .post_form(
            "/signup",
            &[
                ("email", &email),
                ("password", PASSWORD),
                ("org_name", "Analytical Engines"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with("/o/") && to.ends_with("?notice=welcome"),
        "{to}"
    );
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("rookery_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && !session.contains("Secure"),
        "{session}"
    );

    let page = c.page(&to).await;
    assert!(page.contains("data-page=\"dashboard\""));
    assert!(page.contains("Analytical Engines"));
    assert!(page.contains("Welcome to Rookery"));
    assert!(page.contains("Please confirm your email address"));
    for section in ["Domains", "Billing", "API keys", "Team", "Account"] {
        assert!(page.contains(section), "the navigation lacks {section}");
    }
    assert!(!page.contains("/admin/"), "customers see no admin links");
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM memberships WHERE role = 'owner'")
            .await,
        1
    );
}

#[tokio::test]
async fn the_emailed_link_confirms_the_address_once() {
    let app = spawn_app().await;
    let email = unique_email("grace");
    let (c, _) = app.customer(&email, "").await;
    let link = app.link_in_last_mail_to(&email).await;
    assert!(link.starts_with("/verify-email?token="), "{link}");
    let r = c.get(&link).await;
    assert_eq!(location(&r), "/account?notice=verified");
    let account = c.page("/account").await;
    assert!(account.contains("confirmed") && !account.contains("not confirmed"));
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM users WHERE email_verified_at IS NOT NULL")
            .await,
        1
    );
    // The same link again is spent.
    assert_eq!(c.get(&link).await.status(), 410);
}

#[tokio::test]
async fn sign_up_errors_are_explained_and_nothing_is_stored() {
    let app = spawn_app().await;
    let c = app.client();
    let cases: &[(&str, &str, &str)] = &[
        (
            "not-an-address",
            PASSWORD,
            "Enter an email address like name@example.com.",
        ),
        (
            "ada@example",
            PASSWORD,
            "Enter an email address like name@example.com.",
        ),
        ("", PASSWORD, "Enter your email address."),
        ("ada@example.com", "short1!", "Use at least 10 characters."),
        ("ada@example.com", "Password123!", "too easy to guess"),
        ("ada@example.com", "qwertyuiop", "too easy to guess"),
    ];
    for (email, password, message) in cases {
        let r = c
            .post_form(
                "/signup",
                &[("email", email), ("password", password), ("org_name", "")],
            )
            .await;
        assert_eq!(r.status(), 422, "{email} / {password}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(message),
            "{email} / {password}: expected {message:?}"
        );
        assert!(
            !body.contains(password) || password.is_empty(),
            "the password is never echoed back"
        );
        assert!(body.contains("data-page=\"signup\""));
    }
    assert_eq!(users(&app).await, 0);

    // Duplicates, whatever the case of the address.
    let email = unique_email("Dup");
    let (_, _) = app.customer(&email, "First").await;
    let again = app.client();
    let r = again
        .post_form(
            "/signup",
            &[
                ("email", &email.to_uppercase()),
                ("password", PASSWORD),
                ("org_name", "Second"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("An account with this email already exists")
    );
    assert_eq!(users(&app).await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM organisations").await,
        1
    );
}

#[tokio::test]
async fn a_form_post_without_a_valid_csrf_token_is_rejected_and_changes_nothing() {
    let app = spawn_app().await;
    let c = app.client();
    let _ = c.csrf_token().await; // the browser has its cookie, but the form lacks the token
    let fields = [
        ("email", "eve@example.com"),
        ("password", PASSWORD),
        ("org_name", "Eve"),
    ];
    let r = c.post_raw("/signup", &fields).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Nothing was changed"));
    let mut forged = fields.to_vec();
    forged.push((
        "csrf",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ));
    assert_eq!(c.post_raw("/signup", &forged).await.status(), 403);
    // Another browser's valid token does not work either.
    let other = app.client();
    let others_token = other.csrf_token().await;
    let mut stolen = fields.to_vec();
    stolen.push(("csrf", &others_token));
    assert_eq!(c.post_raw("/signup", &stolen).await.status(), 403);
    assert_eq!(users(&app).await, 0);

    // Signed in, a password change without the token changes nothing.
    let email = unique_email("frank");
    let (c, _) = app.customer(&email, "").await;
    let before = app
        .count("SELECT COUNT(*) AS n FROM users WHERE password_changed_at = created_at")
        .await;
    let r = c
        .post_raw(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another-long-passphrase-77"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = c.login(&email, PASSWORD).await; // still the old password
    assert_eq!(r.status(), 303);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM users WHERE password_changed_at = created_at")
            .await,
        before
    );
}

#[tokio::test]
async fn a_member_of_organisation_a_gets_404_on_organisation_bs_pages_and_forms() {
    let app = spawn_app().await;
    let (alice, a_home) = app.customer(&unique_email("alice"), "Org A").await;
    let (bob, b_home) = app.customer(&unique_email("bob"), "Org B").await;
    assert_eq!(alice.get(&a_home).await.status(), 200);
    for page in ["", "/domains", "/billing", "/api-keys", "/team"] {
        let r = alice.get(&format!("{b_home}{page}")).await;
        assert_eq!(r.status(), 404, "{b_home}{page}");
        assert!(!r.text().await.unwrap().contains("Org B"));
    }
    let r = alice
        .post_form(
            &format!("{b_home}/team/invite"),
            &[("email", "mallory@example.com"), ("role", "owner")],
        )
        .await;
    assert_eq!(r.status(), 404);
    let members = app.count("SELECT COUNT(*) AS n FROM memberships").await;
    let bob_id: String = {
        use sqlx::Row;
        sqlx::query("SELECT user_id FROM memberships WHERE org_id = $1")
            .bind(b_home.trim_start_matches("/o/"))
            .fetch_one(&app.state.db)
            .await
            .unwrap()
            .get("user_id")
    };
    let r = alice
        .post_form(&format!("{b_home}/team/members/{bob_id}/remove"), &[])
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM invitations").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM memberships").await,
        members
    );
    // An organisation that does not exist looks the same.
    assert_eq!(
        alice
            .get("/o/00000000-0000-0000-0000-000000000000/team")
            .await
            .status(),
        404
    );
    // And Bob still has his.
    assert_eq!(bob.get(&format!("{b_home}/team")).await.status(), 200);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let email = unique_email("hedy");
    app.customer(&email, "").await;
    let c = app.client();
    let wrong = c.login(&email, "not-the-password-at-all").await;
    let (s1, b1) = (wrong.status(), wrong.text().await.unwrap());
    let unknown = c
        .login(&unique_email("nobody"), "not-the-password-at-all")
        .await;
    let (s2, b2) = (unknown.status(), unknown.text().await.unwrap());
    assert_eq!(s1, 401);
    assert_eq!(s1, s2);
    assert!(b1.contains("Incorrect email or password."));
    assert!(b2.contains("Incorrect email or password."));
    assert!(b1.contains("role=\"alert\""));
}

#[tokio::test]
async fn logging_in_rotates_the_session_and_logging_out_ends_it() {
    let app = spawn_app().await;
    let email = unique_email("ida");
    let (c, home) = app.customer(&email, "").await;
    let r = c.post_form("/logout", &[]).await;
    assert_eq!(location(&r), "/login?notice=logged-out");
    let r = c.get(&home).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/login?next="));
    let r = c.login(&email, PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/dashboard");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find(|v| v.to_str().unwrap().starts_with("rookery_session="))
        .map(|v| v.to_str().unwrap().to_string());
    assert!(cookie.is_some(), "log-in sets a fresh session cookie");
    assert_eq!(c.get("/dashboard").await.status(), 303);
    assert_eq!(location(&c.get("/dashboard").await), home);
    // Only the one live session is stored: the one from sign-up ended at log-out.
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM sessions").await, 1);
    // `next` brings the person back, but never to another site.
    c.post_form("/logout", &[]).await;
    let r = c
        .post_form(
            "/login",
            &[
                ("email", &email),
                ("password", PASSWORD),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(location(&r), "/account");
    c.post_form("/logout", &[]).await;
    let r = c
        .post_form(
            "/login",
            &[
                ("email", &email),
                ("password", PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(location(&r), "/dashboard");
}

#[tokio::test]
async fn a_session_expires_after_inactivity() {
    let app = spawn_app().await;
    let (c, home) = app.customer(&unique_email("joan"), "").await;
    app.clock.advance(3600);
    assert_eq!(c.get(&home).await.status(), 200, "an hour idle is fine");
    app.clock
        .advance(app.state.settings.session.idle_timeout_secs + 1);
    let r = c.get(&home).await;
    assert_eq!(
        r.status(),
        303,
        "a session idle for longer than the timeout is gone"
    );
}

#[tokio::test]
async fn the_login_rate_limit_triggers_and_lifts() {
    let app = spawn_app().await;
    let email = unique_email("kate");
    app.customer(&email, "").await;
    let c = app.client();
    let per_account = app.state.settings.login_limits.per_account;
    for _ in 0..per_account {
        assert_eq!(
            c.login(&email, "wrong-password-guess-1").await.status(),
            401
        );
    }
    // Now even the right password is refused, with a clear message.
    let r = c.login(&email, PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body = r.text().await.unwrap();
    assert!(body.contains("Too many failed log-in attempts"), "{body}");
    assert!(body.contains("try again in 15 minutes"), "{body}");
    // Another account from elsewhere is not affected by this account's limit.
    let other = unique_email("liam");
    app.customer(&other, "").await;
    assert_eq!(app.client().login(&other, PASSWORD).await.status(), 303);

    app.clock
        .advance(app.state.settings.login_limits.window_secs + 1);
    let r = c.login(&email, PASSWORD).await;
    assert_eq!(r.status(), 303, "the limit lifts after the window");
}

#[tokio::test]
async fn the_per_address_login_limit_covers_many_accounts() {
    let app = spawn_app_with(|s| s.login_limits.per_ip = 4).await;
    let c = app.client();
    for i in 0..4 {
        assert_eq!(
            c.login(&format!("guess{i}@example.com"), "wrong-password-guess-1")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        c.login("guess9@example.com", "wrong-password-guess-1")
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_password_is_reset_by_emailed_link_once() {
    let app = spawn_app().await;
    let email = unique_email("lise");
    let (old_browser, home) = app.customer(&email, "").await;
    let c = app.client();
    let r = c.post_form("/password/forgot", &[("email", &email)]).await;
    assert_eq!(location(&r), "/password/forgot?notice=reset-sent");
    // Unknown addresses get the same answer and no mail.
    let nobody = unique_email("nobody");
    let r = c.post_form("/password/forgot", &[("email", &nobody)]).await;
    assert_eq!(location(&r), "/password/forgot?notice=reset-sent");
    assert!(app.last_mail_to(&nobody).await.is_none());

    let link = app.link_in_last_mail_to(&email).await;
    assert!(link.starts_with("/password/reset?token="), "{link}");
    let page = c.page(&link).await;
    let token = link.split("token=").nth(1).unwrap();
    assert!(csrf_in(&page).is_some());
    // A weak new password is refused and the link stays usable.
    let r = c
        .post_form(
            "/password/reset",
            &[("token", token), ("password", "password1234")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let new_password = "a-brand-new-passphrase-99";
    let r = c
        .post_form(
            "/password/reset",
            &[("token", token), ("password", new_password)],
        )
        .await;
    assert_eq!(location(&r), "/login?notice=password-reset");
    // Spent link; sessions elsewhere ended; the old password no longer works.
    assert_eq!(c.get(&link).await.status(), 410);
    assert_eq!(old_browser.get(&home).await.status(), 303);
    assert_eq!(c.login(&email, PASSWORD).await.status(), 401);
    assert_eq!(c.login(&email, new_password).await.status(), 303);
}

#[tokio::test]
async fn changing_the_password_logs_out_other_sessions() {
    let app = spawn_app().await;
    let email = unique_email("mary");
    let (c, home) = app.customer(&email, "").await;
    let other = app.client();
    assert_eq!(other.login(&email, PASSWORD).await.status(), 303);
    let r = c
        .post_form(
            "/account/password",
            &[
                ("current_password", "wrong"),
                ("new_password", "another-long-passphrase-77"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("This is not your current password.")
    );
    let r = c
        .post_form(
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "another-long-passphrase-77"),
            ],
        )
        .await;
    assert_eq!(location(&r), "/account?notice=password-changed");
    assert_eq!(
        c.get(&home).await.status(),
        200,
        "this browser stays signed in"
    );
    assert_eq!(
        other.get(&home).await.status(),
        303,
        "the other session ended"
    );
    assert_eq!(
        app.client()
            .login(&email, "another-long-passphrase-77")
            .await
            .status(),
        303
    );
}

#[tokio::test]
async fn an_owner_invites_a_teammate_who_signs_up_and_joins() {
    let app = spawn_app().await;
    let (owner, home) = app.customer(&unique_email("nora"), "Team Org").await;
    let invitee = unique_email("olga");
    let r = owner
        .post_form(
            &format!("{home}/team/invite"),
            &[("email", "not an email"), ("role", "member")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let r = owner
        .post_form(
            &format!("{home}/team/invite"),
            &[("email", &invitee), ("role", "member")],
        )
        .await;
    assert_eq!(location(&r), format!("{home}/team?notice=invited"));
    assert!(owner.page(&format!("{home}/team")).await.contains(&invitee));

    let link = app.link_in_last_mail_to(&invitee).await;
    assert!(link.starts_with("/invitations/"));
    let c = app.client();
    let page = c.page(&link).await;
    assert!(page.contains("Join Team Org"));
    let r = c
        .post_form(
            "/signup",
            &[
                ("email", &invitee),
                ("password", PASSWORD),
                ("org_name", ""),
                ("next", &link),
            ],
        )
        .await;
    assert_eq!(location(&r), link);
    let r = c.post_form(&link, &[]).await;
    assert_eq!(location(&r), format!("{home}?notice=joined"));
    let team = c.page(&format!("{home}/team")).await;
    assert!(team.contains(&invitee) && team.contains("member"));
    assert!(
        !team.contains("Send invitation"),
        "members do not manage the team"
    );
    // Members cannot invite.
    let r = c
        .post_form(
            &format!("{home}/team/invite"),
            &[("email", &unique_email("pia")), ("role", "owner")],
        )
        .await;
    assert_eq!(r.status(), 403);
    // The invitation is spent.
    assert_eq!(c.get(&link).await.status(), 404);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM organisations").await,
        1,
        "the invitee made no organisation of their own"
    );
}

#[tokio::test]
async fn admin_pages_are_for_platform_admins_only() {
    let app = spawn_app().await;
    let (customer, _) = app.customer(&unique_email("quinn"), "").await;
    for page in [
        "/admin/tenants",
        "/admin/plans",
        "/admin/outbox",
        "/admin/nodes",
    ] {
        assert_eq!(customer.get(page).await.status(), 404, "{page}");
    }
    // Make an admin the way `rookery admin create` does (the CLI itself is tested as a process).
    let hash = app.state.hasher.hash(PASSWORD).await.unwrap();
    let admin_email = unique_email("root");
    rookery::auth::db::insert_user(
        &app.state.db,
        rookery::auth::db::NewUser {
            email: &admin_email,
            email_normalized: &admin_email,
            password_hash: &hash,
            is_admin: true,
            verified: true,
        },
        app.clock.now(),
    )
    .await
    .unwrap();
    let admin = app.client();
    assert_eq!(
        location(&admin.login(&admin_email, PASSWORD).await),
        "/dashboard"
    );
    assert_eq!(location(&admin.get("/dashboard").await), "/admin/tenants");
    let tenants = admin.page("/admin/tenants").await;
    assert!(tenants.contains("quinn-"));
    let outbox = admin.page("/admin/outbox").await;
    assert!(outbox.contains("Confirm your email address for Rookery"));

    // Plans: bad input is explained, good input appears on the landing page.
    let r = admin
        .post_form(
            "/admin/plans",
            &[
                ("name", "Team"),
                ("description", "For teams"),
                ("price", "4.999"),
                ("currency", "EU"),
                ("max_accounts", "0"),
                ("max_sessions", "50"),
                ("storage_mb", "1024"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Enter a price like 4.50")
            && body.contains("three-letter currency")
            && body.contains("whole number above 0")
    );
    let r = admin
        .post_form(
            "/admin/plans",
            &[
                ("name", "Team"),
                ("description", "For teams"),
                ("price", "4.50"),
                ("currency", "eur"),
                ("max_accounts", "25"),
                ("max_sessions", "50"),
                ("storage_mb", "1024"),
                ("upload_mb", "2048"),
                ("archive_days", "90"),
                ("public", "1"),
            ],
        )
        .await;
    assert_eq!(location(&r), "/admin/plans?notice=plan-created");
    let landing = app.client().page("/").await;
    assert!(
        landing.contains("Team")
            && landing.contains("EUR 4.50 / month")
            && landing.contains("25 chat accounts")
    );

    // Resellers.
    let org_id = customer.get("/dashboard").await.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/o/")
        .to_string();
    let r = admin
        .post_form(
            &format!("/admin/tenants/{org_id}/reseller"),
            &[("reseller", "1")],
        )
        .await;
    assert_eq!(location(&r), "/admin/tenants?notice=tenant-updated");
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM organisations WHERE is_reseller = 1")
            .await,
        1
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let c = app.client();
    assert_eq!(c.get("/healthz").await.status(), 200);
    assert_eq!(c.get("/readyz").await.status(), 200);
    app.customer(&unique_email("rita"), "").await;
    let metrics = c.page("/metrics").await;
    assert!(metrics.contains("rookery_signups_total 1"), "{metrics}");
    assert!(
        metrics.contains("rookery_http_requests_total{method=\"POST\",status=\"303\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("rookery_active_sessions 1"), "{metrics}");
    let r = c.get("/no/such/page").await;
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("x-request-id").is_some());
}

#[tokio::test]
async fn cookies_are_secure_when_the_panel_is_served_over_https() {
    let app = spawn_app_with(|s| s.public_url = "https://panel.example.com".into()).await;
    let r = app.client().get("/login").await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("rookery_csrf=")
            && cookie.contains("Secure")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
