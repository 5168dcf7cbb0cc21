-- Rookery panel, provisioning: the node pool, join tokens, customer domains with their
-- desired and applied placement, usage samples, and the admin audit log.
-- Portable between SQLite and PostgreSQL (TEXT ids, BIGINT Unix seconds and 0/1 flags).

-- Nodes of the pool. `state` is the admin's intent (active, cordoned, draining); `health`
-- is what the poller sees (unknown, up, down).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_host TEXT NOT NULL,
    c2s_port BIGINT NOT NULL,
    c2s_tls_port BIGINT NOT NULL,
    control_url TEXT NOT NULL,
    control_cert_sha256 TEXT NOT NULL,
    -- The secret the panel presents to the node, sealed with the panel's secret key.
    secret_sealed TEXT NOT NULL,
    capacity_vhosts BIGINT NOT NULL,
    capacity_sessions BIGINT NOT NULL,
    -- JSON object of label → value.
    labels TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    health TEXT NOT NULL,
    missed_polls BIGINT NOT NULL DEFAULT 0,
    last_heartbeat_at BIGINT,
    last_error TEXT,
    -- The last status the node reported.
    sessions BIGINT NOT NULL DEFAULT 0,
    reported_vhosts BIGINT NOT NULL DEFAULT 0,
    cpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    load_average DOUBLE PRECISION NOT NULL DEFAULT 0,
    cpu_cores BIGINT NOT NULL DEFAULT 0,
    memory_bytes BIGINT NOT NULL DEFAULT 0,
    memory_total_bytes BIGINT NOT NULL DEFAULT 0,
    uptime_secs BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- One-time tokens admins create for `rookery-node join`; only their hash is kept.
CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    node_id TEXT
);

-- Customer domains (XMPP virtual hosts). `node_id` + `generation` is the desired
-- placement; `applied_*` is what the node confirmed. While a domain moves,
-- `move_from_node_id` names the node that still holds its data.
CREATE TABLE domains (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organisations (id),
    domain TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    plan_id TEXT REFERENCES plans (id),
    node_id TEXT REFERENCES nodes (id),
    generation BIGINT NOT NULL,
    applied_node_id TEXT,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    move_from_node_id TEXT,
    move_step TEXT,
    -- Why the domain waits (no node fits, the node refused the spec…), for people.
    waiting_reason TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    active_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX domains_org ON domains (org_id);
CREATE INDEX domains_node ON domains (node_id);

-- Usage a node reported for a domain over one polling period.
CREATE TABLE usage_samples (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    node_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    period_secs BIGINT NOT NULL,
    accounts BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    peak_sessions BIGINT NOT NULL,
    messages_in BIGINT NOT NULL,
    messages_out BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL
);
CREATE INDEX usage_samples_domain_at ON usage_samples (domain, at);

-- Every admin action, newest first on the audit page.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
