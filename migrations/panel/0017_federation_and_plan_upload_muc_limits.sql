-- Rookery panel: a domain's federation, chosen on its settings page or through the API,
-- and a plan's upload and group chat limits. Both reach the node in the spec the
-- reconciler pushes (`nodes::reconcile::spec_for`).

-- Whom the domain exchanges stanzas with: 'open', every domain (the default, as before);
-- 'allowlist', only the domains of `federation_allow`; 'closed', no other domain (its own
-- accounts and services only). Sent as `features.federation` and
-- `features.federation_allow`.
ALTER TABLE domains ADD COLUMN federation_mode TEXT NOT NULL DEFAULT 'open'
    CHECK (federation_mode IN ('open', 'allowlist', 'closed'));
-- The allow-list: normalised domain names, one per line, sorted ('' for none). Kept while
-- another mode is chosen, so switching back finds it; sent to the node only in
-- 'allowlist' mode.
ALTER TABLE domains ADD COLUMN federation_allow TEXT NOT NULL DEFAULT '';

-- Upload (XEP-0363) and group chat (XEP-0045) limits of a plan's domains; NULL: the node's
-- default. Sizes in MiB, sent in bytes: `limits.upload_max_file_bytes`,
-- `upload_quota_bytes_per_account`; `upload_retention_days`, `max_rooms` and
-- `max_room_occupants` as they are.
ALTER TABLE plans ADD COLUMN upload_max_file_mb BIGINT;
ALTER TABLE plans ADD COLUMN upload_account_mb BIGINT;
ALTER TABLE plans ADD COLUMN upload_retention_days BIGINT;
ALTER TABLE plans ADD COLUMN max_rooms BIGINT;
ALTER TABLE plans ADD COLUMN max_room_occupants BIGINT;
