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
    let browser = rookery_tests::app::TestClient::new(&panel.base_url);
    let r = browser.login("root@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let tenants = browser.get("/admin/tenants").await;
    assert_eq!(tenants.status(), 200);
    assert!(tenants.text().await.unwrap().contains("Tenants"));

    // SIGTERM drains and exits cleanly.
    let status = panel.terminate().await.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// Python's standard-library SMTP server (`smtpd`'s DebuggingServer) prints every message
/// it receives: a real SMTP peer for the panel's lettre client.
#[tokio::test]
async fn mail_goes_out_through_smtp_when_configured() {
    use rookery_tests::{app::eventually, process::free_loopback_port};
    use sqlx::Row;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let port = free_loopback_port().unwrap();
    let mut smtpd = tokio::process::Command::new("python3")
        .args([
            "-u",
            "-W",
            "ignore",
            "-m",
            "smtpd",
            "-n",
            "-c",
            "DebuggingServer",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let received = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(smtpd.stdout.take().unwrap()).lines();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    eventually(20, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
    .expect("smtpd listens");

    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let panel = PanelProcess::start_with_env(&[
        ("ROOKERY_SMTP_URL", &smtp_url),
        ("ROOKERY_MAIL_FROM", "Rookery <noreply@panel.test>"),
    ])
    .await
    .unwrap();
    let browser = rookery_tests::app::TestClient::new(&panel.base_url);
    let r = browser
        .post_form(
            "/signup",
            &[
                ("email", "smtp-user@example.com"),
                ("password", PASSWORD),
                ("org_name", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);

    eventually(20, || {
        let received = received.clone();
        async move {
            received
                .lock()
                .unwrap()
                .contains("Confirm your email address for Rookery")
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the SMTP server got no confirmation mail; it printed:\n{}",
            received.lock().unwrap()
        )
    });
    let got = received.lock().unwrap().clone();
    assert!(
        got.contains("smtp-user@example.com") && got.contains("noreply@panel.test"),
        "{got}"
    );

    // The outbox records the delivery, without the one-time link's token.
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&panel.database.url).await.unwrap();
    eventually(20, || {
        let db = db.clone();
        async move {
            sqlx::query("SELECT status FROM outbox_mail")
                .fetch_one(&db)
                .await
                .is_ok_and(|r| r.get::<String, _>("status") == "sent")
        }
    })
    .await
    .expect("the outbox marks the mail sent");
    let body: String = sqlx::query("SELECT body FROM outbox_mail")
        .fetch_one(&db)
        .await
        .unwrap()
        .get("body");
    assert!(
        body.contains("verify-email?token=[one-time token removed]"),
        "{body}"
    );
    db.close().await;
}
