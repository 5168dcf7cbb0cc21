//! HTTP file upload (XEP-0363) on a real node, driven by slixmpp's own plugin
//! (`tests/python/upload_scenario.py`): the service found through disco, a file uploaded
//! over verified HTTPS with the slot's Authorization header and downloaded unchanged (whole and as a byte
//! range) with its content type, an upload over the account's quota refused, a file over
//! the largest size refused; the node's files and rows checked afterwards.

use std::time::Duration;

use reqwest::Method;
use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "upload.test";
const SIZE: i64 = 300_000;

#[tokio::test]
async fn files_upload_download_and_meet_the_quota_with_slixmpp() {
    // The domain is the node's public host: slots name https://upload.test:<port>/….
    let node = NodeProcess::start_with_env(&[("ROOKERY_NODE_PUBLIC_HOST", DOMAIN)])
        .await
        .unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1")])
        .await
        .unwrap();
    // One file fits the account's quota, two do not; the largest file is 1 MB.
    let (status, body) = node
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{DOMAIN}"),
            Some(serde_json::json!({
                "domain": DOMAIN,
                "generation": 1,
                "limits": {
                    "upload_quota_bytes_per_account": SIZE * 3 / 2,
                    "upload_max_file_bytes": 1_000_000,
                },
            })),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    node.wait_for_vhost(DOMAIN).await.unwrap();

    node.scenario(
        "upload_scenario.py",
        DOMAIN,
        &[&SIZE.to_string()],
        &[
            "the upload service is found through disco",
            "the slot is an HTTPS URL at the domain",
            "alice uploads a file of 300000 bytes",
            "the GET URL returns the same bytes",
            "with the content type of the slot",
            "a byte range returns those bytes",
            "an upload over the quota is refused",
            "a file over the largest size is refused",
        ],
        Duration::from_secs(120),
    )
    .await;

    // One file on disk, of the uploaded size, and nothing half-written.
    let dir = node.data_dir().join("uploads").join(DOMAIN);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].metadata().unwrap().len(), SIZE as u64);
    assert!(
        !files[0].file_name().to_string_lossy().ends_with(".part"),
        "{files:?}"
    );
}
