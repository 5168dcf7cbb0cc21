//! The load generator (`rookery-load`, issue 3's benchmark) on a tiny run, so it keeps
//! working as the node changes: it must log in, route, and print every figure.

use std::time::Duration;

use rookery_tests::process::workspace_binary;

#[tokio::test]
async fn the_load_generator_logs_in_routes_messages_and_prints_every_figure() {
    let node = workspace_binary("rookery-node").unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_rookery-load"))
        .args(["--sessions", "20", "--warmup", "2", "--duration-secs", "1"])
        .arg("--node-bin")
        .arg(&node)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("rookery-load finished within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rookery-load failed:\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for figure in [
        "sessions (N): 20",
        "resident memory per session:",
        "logins/s:",
        "server CPU per login:",
        "routed msgs/s:",
        "server CPU per routed message:",
        "latency (one way",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in:\n{stdout}");
    }
}
