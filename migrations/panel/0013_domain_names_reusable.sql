-- Rookery panel, reusable domain names: a name is unique among the domains that are not
-- deleted, so a deleted domain (or an order whose checkout was abandoned) no longer keeps
-- its name from being ordered again; the deleted row stays, for its history. And the time
-- a domain's plan was chosen, so a late Stripe event cannot undo a newer plan change.
--
-- `domains.domain` was UNIQUE in its table definition (0002), which SQLite cannot drop in
-- place: the table is rebuilt, the same way on both engines (create, copy, drop, rename,
-- indexes). No other table has a foreign key to `domains`, and the copy keeps every
-- column, so ids, placements and billing fields are as they were.

CREATE TABLE domains_rebuilt (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organisations (id),
    domain TEXT NOT NULL,
    state TEXT NOT NULL,
    plan_id TEXT REFERENCES plans (id),
    node_id TEXT REFERENCES nodes (id),
    generation BIGINT NOT NULL,
    applied_node_id TEXT,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    move_from_node_id TEXT,
    move_step TEXT,
    waiting_reason TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    active_at BIGINT,
    updated_at BIGINT NOT NULL,
    grace_until BIGINT,
    delete_after BIGINT,
    stripe_subscription_id TEXT,
    stripe_checkout_id TEXT,
    suspended_by_admin BIGINT NOT NULL DEFAULT 0,
    probe_username TEXT,
    probe_password_sealed TEXT,
    probe_node_id TEXT,
    status_public BIGINT NOT NULL DEFAULT 0,
    -- When the current plan was chosen: Unix seconds of the Stripe event that chose it, or
    -- of the change in the panel (0: when the domain was ordered).
    plan_changed_at BIGINT NOT NULL DEFAULT 0
);

INSERT INTO domains_rebuilt (
    id, org_id, domain, state, plan_id, node_id, generation, applied_node_id,
    applied_generation, move_from_node_id, move_step, waiting_reason, attempts,
    next_attempt_at, created_at, active_at, updated_at, grace_until, delete_after,
    stripe_subscription_id, stripe_checkout_id, suspended_by_admin, probe_username,
    probe_password_sealed, probe_node_id, status_public, plan_changed_at
)
SELECT
    id, org_id, domain, state, plan_id, node_id, generation, applied_node_id,
    applied_generation, move_from_node_id, move_step, waiting_reason, attempts,
    next_attempt_at, created_at, active_at, updated_at, grace_until, delete_after,
    stripe_subscription_id, stripe_checkout_id, suspended_by_admin, probe_username,
    probe_password_sealed, probe_node_id, status_public, 0
FROM domains;

DROP TABLE domains;
ALTER TABLE domains_rebuilt RENAME TO domains;

CREATE INDEX domains_org ON domains (org_id);
CREATE INDEX domains_node ON domains (node_id);
-- Look-ups by name (status pages, stray vhosts, alerts), deleted rows included.
CREATE INDEX domains_name ON domains (domain);
-- One live domain per name; any number of deleted ones.
CREATE UNIQUE INDEX domains_live_name ON domains (domain) WHERE state <> 'deleted';
-- Stripe's events find their domain by subscription.
CREATE INDEX domains_subscription ON domains (stripe_subscription_id);
