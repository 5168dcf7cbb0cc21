//! What the end-to-end tests of the panel with a real node share: the panel in process with
//! fast loops, one `rookery-node` process joined to it with a join token, an admin and a
//! customer, and waiting until the node serves a domain's newest spec.

use std::time::Duration;

use reqwest::Method;
use rookery_common::control::VhostSpec;
use rookery_tests::{
    app::{TestApp, TestClient, location, spawn_app_with, unique_email},
    node::NodeProcess,
};

/// The panel with fast loops, a node joined to it, an admin and a customer.
pub struct Setup {
    pub app: TestApp,
    pub admin: TestClient,
    pub node: NodeProcess,
    /// The node's control secret, as the panel keeps it (`join` stored it in the node).
    pub node_secret: String,
    pub customer: TestClient,
    pub org: String,
}

pub async fn setup(note: &str, org_name: &str) -> Setup {
    let app = spawn_app_with(|s| {
        s.provisioning.reconcile_interval_ms = 100;
        s.provisioning.poll_interval_secs = 1;
        s.probe.enabled = false;
    })
    .await;
    let admin = app.admin().await;
    let html = admin
        .post_form("/admin/nodes/tokens", &[("note", note)])
        .await
        .text()
        .await
        .unwrap();
    let marker = "id=\"join-token\" class=\"code\">";
    let start = html.find(marker).expect("the join token is shown") + marker.len();
    let token = html[start..start + html[start..].find('<').unwrap()]
        .trim()
        .to_string();
    let node = NodeProcess::join_and_start(&app.address, &token, "node-1")
        .await
        .expect("the node joins");
    let node_secret = rookery::nodes::db::node_by_name(&app.state.db, "node-1")
        .await
        .unwrap()
        .expect("the node is in the pool")
        .endpoint(&app.state.sealer)
        .unwrap()
        .secret;
    let (customer, org) = app.customer(&unique_email("owner"), org_name).await;
    Setup {
        app,
        admin,
        node,
        node_secret,
        customer,
        org,
    }
}

impl Setup {
    /// Orders `domain` (on `plan`, if any) and waits until the node serves it; returns the
    /// domain page's path.
    pub async fn live_domain(&self, domain: &str, plan: Option<&str>) -> String {
        let mut form = vec![("domain", domain)];
        form.extend(plan.map(|p| ("plan", p)));
        let r = self
            .customer
            .post_form(&format!("{}/domains", self.org), &form)
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
        let page = location(&r).split('?').next().unwrap().to_string();
        self.settled(domain).await;
        page
    }

    /// Waits until the node serves the domain's newest generation; returns its spec.
    pub async fn settled(&self, domain: &str) -> VhostSpec {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let row = rookery::domains::db::by_name(&self.app.state.db, domain)
                .await
                .unwrap()
                .unwrap();
            if row.converged()
                && let Some(spec) = self.node_spec(domain).await
                && spec.generation == row.generation
            {
                return spec;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{domain} does not settle on the node: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spec the node stored for `domain` (`GET /v1/vhosts/{domain}`).
    pub async fn node_spec(&self, domain: &str) -> Option<VhostSpec> {
        let (status, body) = self
            .node
            .control_as(
                &self.node_secret,
                Method::GET,
                &format!("/v1/vhosts/{domain}"),
                None,
            )
            .await
            .unwrap();
        status
            .is_success()
            .then(|| serde_json::from_value(body).unwrap())
    }

    pub async fn generation(&self, domain: &str) -> i64 {
        sqlx::query_scalar("SELECT generation FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_one(&self.app.state.db)
            .await
            .unwrap()
    }
}
