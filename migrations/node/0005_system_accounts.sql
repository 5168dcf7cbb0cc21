-- Accounts the platform itself uses on a vhost (the uptime prober's): hidden from the
-- customer's account list and not counted against the plan's account limit.
ALTER TABLE accounts ADD COLUMN system BIGINT NOT NULL DEFAULT 0;
