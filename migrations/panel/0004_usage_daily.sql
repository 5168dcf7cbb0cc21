-- Per-domain usage rolled up per UTC day as samples arrive, so the 30-day charts read 30
-- rows instead of every 5-second sample. Raw samples are pruned after a few days.

CREATE TABLE usage_daily (
    domain TEXT NOT NULL,
    -- Unix day number (seconds / 86400).
    day BIGINT NOT NULL,
    accounts BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    peak_sessions BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (domain, day)
);
CREATE INDEX usage_samples_at ON usage_samples (at);
