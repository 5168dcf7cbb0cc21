//! XEP-0077 in-band registration from the panel's switch to a real node, driven by
//! slixmpp's `xep_0077` plugin (Python, written by others): `tests/python/register_scenario.py`.
//! Off by default: not offered, refused. Switched on on the domain's settings page (a bad
//! value refused, nothing changed), the node gets it: a new account registers, logs in on
//! the same stream and sends a message; a taken name, a bad name, a weak password and the
//! plan's account limit are refused with XEP-0077's conditions; the password changes and the
//! account goes in-band. Switched on through the API on another domain, the per-address
//! hourly limit refuses past it (the plan's account limit notwithstanding). The panel runs in process, with one `rookery-node` process
//! joined to it.

use std::time::Duration;

use rookery_tests::{
    app::{location, plan_form},
    node::run_python,
};

use crate::panel_node::{Setup, setup};

impl Setup {
    /// Runs one mode of the slixmpp scenario against `domain`; asserts its steps passed.
    async fn scenario(&self, domain: &str, args: &[&str], steps: &[&str]) {
        let cert = self.node.cert_of(domain);
        let mut all = vec![
            "127.0.0.1".to_string(),
            self.node.c2s_port.to_string(),
            domain.to_string(),
            cert.to_str().unwrap().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run_python("register_scenario.py", &all, Duration::from_secs(180))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "the slixmpp {args:?} scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.node.output()
        );
        for step in steps {
            assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
        }
    }
}

#[tokio::test]
async fn in_band_registration_is_switched_on_in_the_panel_and_works_with_slixmpp() {
    let s = setup("registration", "Registration Co").await;
    // A plan of two accounts.
    let mut form = plan_form("Two", "0", None);
    form.retain(|(k, _)| *k != "max_accounts");
    form.push(("max_accounts", "2"));
    let r = s.admin.post_form("/admin/plans", &form).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let plan: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Two'")
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();

    let domain = "ibr.example.org";
    let page = s.live_domain(domain, Some(&plan)).await;
    let r = s
        .customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "alice"), ("password", "pass-alice-1")],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());

    // Off by default: the page's box is not ticked, the node is told so and refuses.
    let settings = format!("{page}/settings");
    let html = s.customer.page(&settings).await;
    assert!(
        html.contains("Let people create accounts from their XMPP app"),
        "{html}"
    );
    assert!(html.contains("id=\"registration\""), "{html}");
    assert!(
        !html.contains("id=\"registration\" checked"),
        "unticked: {html}"
    );
    assert!(!s.settled(domain).await.features.registration);
    s.scenario(
        domain,
        &["off"],
        &[
            "ok registration is not offered",
            "ok a register query is refused with not-allowed",
            "ok slixmpp cannot register",
        ],
    )
    .await;

    // A value no checkbox sends is refused with its reason; nothing changes.
    let generation = s.generation(domain).await;
    let r = s
        .customer
        .post_form(
            &format!("{settings}/registration"),
            &[("registration", "maybe")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("Tick the box"), "{html}");
    assert_eq!(s.generation(domain).await, generation);

    // Ticked: saved, a new generation, and the node gets it.
    let r = s
        .customer
        .post_form(
            &format!("{settings}/registration"),
            &[("registration", "on")],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert!(location(&r).ends_with("?notice=registration-on"));
    assert_eq!(s.generation(domain).await, generation + 1);
    assert!(s.settled(domain).await.features.registration);
    let html = s.customer.page(&settings).await;
    assert!(html.contains("id=\"registration\" checked"), "{html}");
    s.scenario(
        domain,
        &["limited"],
        &[
            "ok registration is offered after TLS",
            "ok newbie registers",
            "ok newbie logs in on the same stream",
            "ok alice gets newbie's message",
            "ok the server's disco#info lists jabber:iq:register",
            "ok a taken name is refused with conflict",
            "ok a bad name is refused with not-acceptable",
            "ok an empty password is refused with not-acceptable",
            "ok a short password is refused with not-acceptable",
            "ok past the plan's account limit: resource-constraint",
            "ok newbie changes the password in-band",
            "ok the old password no longer works",
            "ok the new password works",
            "ok newbie deletes the account in-band",
            "ok the stream ends after the removal",
            "ok the deleted account cannot log in",
            "ok the freed place can be registered again",
        ],
    )
    .await;

    // Through the API, on a domain of a plan with room: the per-address limit (the node's
    // default, 5 an hour; two were used above) refuses past it.
    let r = s
        .admin
        .post_form("/admin/plans", &plan_form("Ten", "0", None))
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let ten: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Ten'")
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();
    let other = "ibr-rate.example.org";
    let other_page = s.live_domain(other, Some(&ten)).await;
    let other_id = other_page.rsplit('/').next().unwrap().to_string();
    let key = {
        let r = s
            .customer
            .post_form(
                &format!("{}/api-keys", s.org),
                &[
                    ("name", "registration"),
                    ("scope", "read_write"),
                    ("expires_days", ""),
                ],
            )
            .await;
        let html = r.text().await.unwrap();
        let at = html.find("value=\"rk_").expect("the new key is shown") + "value=\"".len();
        html[at..].split('"').next().unwrap().to_string()
    };
    let api = reqwest::Client::new();
    let url = format!("{}/api/v1/domains/{other_id}", s.app.address);
    let got: serde_json::Value = api
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["registration"], false, "{got}");
    let bad = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"registration": "yes"}))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error(), "{}", bad.status());
    let r = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"registration": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["registration"], true, "{got}");
    assert!(s.settled(other).await.features.registration);
    s.scenario(
        other,
        &["rate", "3"],
        &[
            "ok registration 3 of 3 from this address passes",
            "ok the next one is refused with resource-constraint",
        ],
    )
    .await;

    // And off again through the API: the node stops offering it.
    let r = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"registration": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!s.settled(other).await.features.registration);
}
