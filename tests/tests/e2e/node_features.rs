//! What the node advertises, against a real `rookery-node`: every feature its disco#info
//! lists (for the server, for an account and for the group chat service) must have a test,
//! named in [`COVERAGE`], that exists in the sources; and the small server queries that have no other test (XEP-0092
//! version, XEP-0202 time, disco#items, XEP-0012 server uptime) answer as their XEPs say.

use std::{path::Path, sync::Arc, time::Duration};

use rookery_tests::{
    node::NodeProcess,
    xmpp::{
        client::{Account, LoginConfig, SaltCache, Session, tls_connector},
        xml::El,
    },
};

const DOMAIN: &str = "features.test";

/// Every feature the node advertises in disco#info, with the tests that exercise it (test
/// function names, anywhere under `tests/` or `xmpp-node/src/`).
const COVERAGE: &[(&str, &[&str])] = &[
    (
        "http://jabber.org/protocol/bytestreams",
        &[
            "bytestreams_relay_through_the_proxy_with_slixmpp",
            "only_connects_to_a_stream_name_are_accepted",
        ],
    ),
    (
        "urn:xmpp:http:upload:0",
        &[
            "files_upload_download_and_meet_the_quota_with_slixmpp",
            "an_upload_is_stored_served_with_ranges_and_counted_against_the_quota",
        ],
    ),
    (
        "http://jabber.org/protocol/muc",
        &[
            "a_three_user_room_with_history_kick_ban_and_archive_works_with_slixmpp",
            "a_join_sends_the_others_then_self_presence_to_all_then_the_subject",
            "a_kick_removes_the_occupant_with_status_307_and_only_moderators_may_kick",
        ],
    ),
    (
        "urn:xmpp:occupant-id:0",
        &[
            "occupant_ids_are_stable_per_real_jid_and_differ_between_users",
            "a_three_user_room_with_history_kick_ban_and_archive_works_with_slixmpp",
        ],
    ),
    (
        "http://jabber.org/protocol/disco#info",
        &[
            "two_users_log_in_with_slixmpp_and_exchange_messages",
            "the_specs_contact_addresses_are_in_the_servers_disco_info",
            "every_advertised_feature_has_a_test",
        ],
    ),
    (
        "http://jabber.org/protocol/disco#items",
        &["the_server_answers_version_time_items_and_uptime"],
    ),
    (
        "urn:xmpp:ping",
        &[
            "two_users_log_in_with_slixmpp_and_exchange_messages",
            "idle_sessions_are_pinged_and_silent_ones_disconnected",
        ],
    ),
    (
        "jabber:iq:version",
        &["the_server_answers_version_time_items_and_uptime"],
    ),
    (
        "urn:xmpp:time",
        &["the_server_answers_version_time_items_and_uptime"],
    ),
    (
        "jabber:iq:last",
        &[
            "vcards_blocking_and_last_activity_work_with_slixmpp",
            "the_server_answers_version_time_items_and_uptime",
        ],
    ),
    (
        "jabber:iq:roster",
        &["rosters_and_subscriptions_work_with_slixmpp_and_persist"],
    ),
    (
        "vcard-temp",
        &["vcards_blocking_and_last_activity_work_with_slixmpp"],
    ),
    (
        "jabber:iq:register",
        &[
            "in_band_registration_is_switched_on_in_the_panel_and_works_with_slixmpp",
            "a_logged_in_account_changes_its_password_and_removes_itself",
        ],
    ),
    (
        "urn:xmpp:push:0",
        &[
            "detached_and_offline_accounts_are_woken_through_their_app_server",
            "a_notification_carries_the_summary_and_the_options_and_content_only_when_allowed",
        ],
    ),
    (
        "urn:xmpp:carbons:2",
        &[
            "carbons_copy_a_conversation_to_the_other_resources_that_asked_for_them",
            "copies_go_to_the_other_resources_that_enabled_carbons_only",
        ],
    ),
    (
        "urn:xmpp:blocking",
        &[
            "vcards_blocking_and_last_activity_work_with_slixmpp",
            "block_list_changes_are_pushed_only_to_resources_that_requested_the_list",
        ],
    ),
    (
        "urn:xmpp:mam:2",
        &[
            "archives_page_filter_and_stamp_messages_with_slixmpp",
            // At a room (XEP-0045 rooms' archives).
            "room_messages_are_archived_and_queried_at_the_room",
            "a_three_user_room_with_history_kick_ban_and_archive_works_with_slixmpp",
            "messages_are_archived_on_both_sides_and_delivered_with_the_recipients_archive_id",
        ],
    ),
    (
        "urn:xmpp:mam:2#extended",
        &[
            "archives_page_filter_and_stamp_messages_with_slixmpp",
            "each_filter_narrows_the_set_and_unknown_ids_are_refused",
        ],
    ),
    (
        "urn:xmpp:sid:0",
        &[
            "archives_page_filter_and_stamp_messages_with_slixmpp",
            "messages_are_archived_on_both_sides_and_delivered_with_the_recipients_archive_id",
        ],
    ),
    // XEP-0163 PEP on the account (xep::pep), with XEP-0398 and XEP-0402 #compat.
    (
        "http://jabber.org/protocol/pubsub#access-open",
        &["an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it"],
    ),
    (
        "http://jabber.org/protocol/pubsub#access-presence",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#access-whitelist",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "access_models_decide_who_reads_and_who_is_notified",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#auto-create",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#config-node",
        &[
            "configure_purge_and_delete_change_the_node_and_notify_the_owner",
            "writes_are_the_owners_and_refused_while_the_vhost_moves_and_max_items_keeps_the_newest",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#delete-nodes",
        &["configure_purge_and_delete_change_the_node_and_notify_the_owner"],
    ),
    (
        "http://jabber.org/protocol/pubsub#filtered-notifications",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#item-ids",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "writes_are_the_owners_and_refused_while_the_vhost_moves_and_max_items_keeps_the_newest",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#last-published",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#persistent-items",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "publishing_counts_exactly_keeps_max_items_and_limits_the_nodes",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#publish",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#publish-options",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "publish_options_apply_to_a_new_node_and_must_match_an_existing_one",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#purge-nodes",
        &["configure_purge_and_delete_change_the_node_and_notify_the_owner"],
    ),
    (
        "http://jabber.org/protocol/pubsub#retract-items",
        &[
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "http://jabber.org/protocol/pubsub#retrieve-items",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login",
        ],
    ),
    (
        "urn:xmpp:pep-vcard-conversion:0",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_vcard_photo_becomes_the_avatar_and_private_bookmarks_become_pep_items",
        ],
    ),
    (
        "urn:xmpp:bookmarks:1#compat",
        &[
            "an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it",
            "a_vcard_photo_becomes_the_avatar_and_private_bookmarks_become_pep_items",
        ],
    ),
];

async fn node_with_alice() -> (NodeProcess, Session) {
    let node = NodeProcess::start().await.unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node.c2s_port).parse().unwrap(),
        domain: DOMAIN.into(),
        tls: tls_connector(&node.cert_of(DOMAIN)).unwrap(),
        keys: Arc::new(SaltCache::default()),
        resource: "desk".into(),
        presence: true,
    };
    let alice = Session::login(
        &cfg,
        &Account {
            user: "alice".into(),
            password: "pass-alice-1".into(),
        },
    )
    .await
    .unwrap();
    (node, alice)
}

/// Sends an iq get with `payload` to `to` and returns the result's first child (or the
/// result itself when it is empty).
async fn query(session: &mut Session, to: &str, id: &str, payload: &str) -> El {
    session
        .send(&format!(
            "<iq type='get' id='{id}' to='{to}'>{payload}</iq>"
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let el = tokio::time::timeout_at(deadline, session.next_element())
            .await
            .expect("the node answered within 10 s")
            .unwrap();
        if el.name == "iq" && el.attr("id") == Some(id) {
            assert_eq!(el.attr("type"), Some("result"), "{id}: {el:?}");
            return el.children.first().cloned().unwrap_or(el);
        }
    }
}

fn features(info: &El) -> Vec<String> {
    info.children
        .iter()
        .filter(|c| c.name == "feature")
        .filter_map(|c| c.attr("var").map(str::to_string))
        .collect()
}

/// The text of every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[tokio::test]
async fn every_advertised_feature_has_a_test() {
    let (_node, mut alice) = node_with_alice().await;
    let disco = "<query xmlns='http://jabber.org/protocol/disco#info'/>";
    let mut advertised = features(&query(&mut alice, DOMAIN, "server", disco).await);
    advertised.extend(features(
        &query(&mut alice, &format!("alice@{DOMAIN}"), "account", disco).await,
    ));
    // And the services the vhost lists (group chat, upload, proxy).
    let items = query(
        &mut alice,
        DOMAIN,
        "items",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    for (n, jid) in items
        .children
        .iter()
        .filter_map(|i| i.attr("jid"))
        .enumerate()
    {
        advertised.extend(features(
            &query(&mut alice, jid, &format!("svc{n}"), disco).await,
        ));
    }
    advertised.sort();
    advertised.dedup();
    assert!(advertised.len() >= 9, "{advertised:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    sources(&root.join("tests"), &mut code);
    sources(&root.join("src"), &mut code);
    sources(&root.join("../xmpp-node/src"), &mut code);
    for feature in &advertised {
        let tests = COVERAGE
            .iter()
            .find(|(f, _)| f == feature)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{feature} is advertised but has no test in COVERAGE"));
        for test in tests {
            assert!(
                code.contains(&format!("fn {test}(")),
                "{feature}: the test {test} named in COVERAGE does not exist"
            );
        }
    }
    // And no stale rows: everything covered is still advertised.
    for (feature, _) in COVERAGE {
        assert!(
            advertised.iter().any(|f| f == feature),
            "{feature} is in COVERAGE but no longer advertised"
        );
    }
}

#[tokio::test]
async fn the_server_answers_version_time_items_and_uptime() {
    let (_node, mut alice) = node_with_alice().await;

    // XEP-0092: the software's name and version.
    let version = query(
        &mut alice,
        DOMAIN,
        "v",
        "<query xmlns='jabber:iq:version'/>",
    )
    .await;
    assert_eq!(
        version.child("name").map(|n| n.text.as_str()),
        Some("Rookery")
    );
    assert!(
        version
            .child("version")
            .is_some_and(|v| v.text.split('.').count() == 3),
        "{version:?}"
    );

    // XEP-0202: UTC now, with the offset.
    let before = utc_string(-1);
    let time = query(&mut alice, DOMAIN, "t", "<time xmlns='urn:xmpp:time'/>").await;
    let after = utc_string(1);
    assert_eq!(time.child("tzo").map(|t| t.text.as_str()), Some("+00:00"));
    let utc = &time.child("utc").expect("utc").text;
    assert!(
        utc.ends_with('Z') && utc.len() == 20,
        "XEP-0082 form: {utc}"
    );
    // The same clock: XEP-0082 strings of one length sort by time.
    assert!(
        before.as_str() <= utc.as_str() && utc.as_str() <= after.as_str(),
        "{before} ≤ {utc} ≤ {after}"
    );

    // disco#items of the server: the vhost's services at their subdomains.
    let items = query(
        &mut alice,
        DOMAIN,
        "i",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    assert_eq!(items.name, "query");
    let jids: Vec<&str> = items
        .children
        .iter()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(
        jids,
        [
            format!("conference.{DOMAIN}"),
            format!("upload.{DOMAIN}"),
            format!("proxy.{DOMAIN}")
        ],
        "{items:?}"
    );

    // XEP-0012 to the server: its uptime in seconds.
    let last = query(&mut alice, DOMAIN, "l", "<query xmlns='jabber:iq:last'/>").await;
    let seconds: u64 = last.attr("seconds").expect("seconds").parse().unwrap();
    assert!(seconds < 600, "the node started moments ago: {seconds}");
}

/// Now plus `offset` seconds as XEP-0082 `YYYY-MM-DDThh:mm:ssZ`, computed here from the
/// Unix time (not with the node's own formatting code).
fn utc_string(offset: i64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + offset;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}
