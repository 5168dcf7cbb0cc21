-- Rookery panel, uptime: each domain's probe account, the prober's results, their daily
-- roll-up, and incidents.

-- The account the prober logs in as on the domain's vhost (a system account on the node:
-- not listed, not counted against the plan). Its password is sealed like node secrets.
ALTER TABLE domains ADD COLUMN probe_username TEXT;
ALTER TABLE domains ADD COLUMN probe_password_sealed TEXT;
-- The node the probe account was created on (re-created after a move if it differs).
ALTER TABLE domains ADD COLUMN probe_node_id TEXT;
-- The public status page at /status/<domain> (off by default).
ALTER TABLE domains ADD COLUMN status_public BIGINT NOT NULL DEFAULT 0;

CREATE TABLE probe_results (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL,
    location TEXT NOT NULL,
    at BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    -- The failing stage (connect, tls, auth, bind, ping, message, timeout), NULL when ok.
    stage TEXT,
    error TEXT,
    total_ms BIGINT NOT NULL,
    -- Per-stage latency as JSON {"connect": 1.2, ...} in milliseconds.
    stages TEXT NOT NULL
);
CREATE INDEX probe_results_domain_at ON probe_results (domain_id, at);
CREATE INDEX probe_results_at ON probe_results (at);

-- Results per domain and UTC day, for the 30- and 90-day windows and the bar chart.
CREATE TABLE probe_daily (
    domain_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    up BIGINT NOT NULL,
    down BIGINT NOT NULL,
    PRIMARY KEY (domain_id, day)
);

CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    stage TEXT NOT NULL,
    error TEXT
);
CREATE INDEX incidents_domain ON incidents (domain_id, started_at);
