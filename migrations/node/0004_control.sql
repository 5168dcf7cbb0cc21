-- Vhost specs applied through the control API (the panel's desired state for a domain),
-- portable like 0001: TEXT keys, BIGINT numbers, 0/1 flags, UTC Unix-second timestamps.
-- A vhost added with the CLI has no row here. The node keeps the highest generation it
-- applied, so a repeated PUT is a no-op and an older one is refused; and a restarted node
-- serves its vhosts from here without asking the panel.

CREATE TABLE vhost_specs (
    domain TEXT PRIMARY KEY REFERENCES vhosts (domain) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    -- The whole spec as JSON, without the TLS key (that lives in a 0600 file beside the
    -- certificate, under <data_dir>/certs/managed/).
    spec TEXT NOT NULL,
    -- Copied out of the spec for the running node's policy look-ups.
    suspended BIGINT NOT NULL,
    moved_to TEXT,
    max_accounts BIGINT,
    max_sessions BIGINT,
    applied_at BIGINT NOT NULL
);
