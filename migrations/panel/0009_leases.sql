-- Rookery panel: leader leases. Work that must happen once per deployment (reconciling,
-- polling nodes, probing, billing and data sweeps) runs in the one panel process holding
-- its lease; the others stand by and take over once it expires.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
