-- Rookery panel: node labels a plan's domains require (e.g. region=eu-west), on top of the
-- pool-wide `provisioning.required_labels`. Stored as a JSON object, name → value; '{}' for
-- none.
ALTER TABLE plans ADD COLUMN node_labels TEXT NOT NULL DEFAULT '{}';
