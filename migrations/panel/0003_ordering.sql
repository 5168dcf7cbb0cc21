-- Rookery panel, ordering and billing: fuller plan limits and the Stripe price, the
-- domain's billing dates and Stripe objects, the organisation's Stripe customer, and the
-- Stripe events already processed (each exactly once).

ALTER TABLE plans ADD COLUMN upload_mb BIGINT NOT NULL DEFAULT 1024;
ALTER TABLE plans ADD COLUMN archive_days BIGINT NOT NULL DEFAULT 365;
ALTER TABLE plans ADD COLUMN stripe_price_id TEXT;
ALTER TABLE plans ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- When a failed payment's grace period ends (the domain is then suspended).
ALTER TABLE domains ADD COLUMN grace_until BIGINT;
-- When a cancelled domain's retention ends (the domain is then deleted).
ALTER TABLE domains ADD COLUMN delete_after BIGINT;
ALTER TABLE domains ADD COLUMN stripe_subscription_id TEXT;
ALTER TABLE domains ADD COLUMN stripe_checkout_id TEXT;
-- Suspended by the provider's admin (not by billing): only an admin resumes it.
ALTER TABLE domains ADD COLUMN suspended_by_admin BIGINT NOT NULL DEFAULT 0;

ALTER TABLE organisations ADD COLUMN stripe_customer_id TEXT;

CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    -- What processing did, for the admin's view and debugging.
    outcome TEXT NOT NULL
);
