//! The `rookery` binary as an operator uses it: the first start, `rookery admin create`,
//! and stopping with SIGTERM.

use rookery_tests::{app::PASSWORD, process::PanelProcess};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn admin_create_makes_a_platform_admin_who_can_log_in_and_then_stops_on_sigterm() {
    let panel = PanelProcess::start().await.unwrap();

    // A weak password is refused with the reason, and nothing is created.
    let out = panel
        .cli(
            &["admin", "create", "--email", "root@example.com"],
            Some("password123\n"),
        )
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("too easy to guess"), "{}", text(&out));
    let out = panel
        .cli(
            &["admin", "create", "--email", "not-an-address"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Enter an email address like name@example.com."),
        "{}",
        text(&out)
    );

    let out = panel
        .cli(
            &["admin", "create", "--email", "Root@Example.com"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Created platform admin Root@Example.com"),
        "{}",
        text(&out)
    );
    // The same address again is refused.
    let out = panel
        .cli(
            &["admin", "create", "--email", "root@example.com"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));

    // The admin logs in to the running panel and sees the admin pages.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(panel.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = rookery_tests::app::csrf_in(&login).unwrap();
    let r = http
        .post(panel.url("/login"))
        .form(&[
            ("email", "root@example.com"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let tenants = http.get(panel.url("/admin/tenants")).send().await.unwrap();
    assert_eq!(tenants.status(), 200);
    assert!(tenants.text().await.unwrap().contains("Tenants"));

    // SIGTERM drains and exits cleanly.
    let status = panel.terminate().await.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
