-- Rookery panel, uptime part 2: probe locations besides the panel's own, rounds decided by
-- a quorum of locations, hourly roll-ups and each domain's current status.

-- A `rookery probe --panel … --token …` process elsewhere. The token is shown once; only
-- its SHA-256 is kept, with a prefix to recognise it by.
CREATE TABLE probe_locations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    token_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    last_seen_at BIGINT,
    last_address TEXT,
    revoked_at BIGINT
);

-- When the panel stored a result (a remote location's arrive late and out of order), so
-- that the round keeper reads each one once.
ALTER TABLE probe_results ADD COLUMN received_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX probe_results_received ON probe_results (received_at);

-- One interval of one domain, decided across the locations that reported: up, or down
-- when a quorum of them failed. Unknown rounds (too few locations) are not stored.
CREATE TABLE probe_rounds (
    domain_id TEXT NOT NULL,
    round_start BIGINT NOT NULL,
    up BIGINT NOT NULL,
    stage TEXT,
    reporting BIGINT NOT NULL,
    failing BIGINT NOT NULL,
    PRIMARY KEY (domain_id, round_start)
);
CREATE INDEX probe_rounds_start ON probe_rounds (round_start);

-- Rounds per domain and UTC hour (the 24-hour and 7-day windows); probe_daily counts
-- rounds per day from now on (before, one result was one round: there was one location).
CREATE TABLE probe_hourly (
    domain_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    up BIGINT NOT NULL,
    down BIGINT NOT NULL,
    PRIMARY KEY (domain_id, hour)
);

-- Each domain's latest round and its 24-hour counts, one row a domain, so dashboards and
-- the admin overview read one row instead of scanning results.
CREATE TABLE probe_status (
    domain_id TEXT PRIMARY KEY,
    round_start BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    up BIGINT NOT NULL,
    stage TEXT,
    error TEXT,
    total_ms BIGINT,
    reporting BIGINT NOT NULL,
    failing BIGINT NOT NULL,
    up_24h BIGINT NOT NULL,
    down_24h BIGINT NOT NULL
);
