-- Rookery panel, REST API (issue 7): API keys and the responses kept for idempotent POSTs.
-- Portable between SQLite and PostgreSQL (TEXT ids, BIGINT Unix seconds).

-- A key is `rk_<prefix>_<secret>`. Only the SHA-256 of the whole key is kept; the prefix
-- is shown in the panel and finds the row. `org_id` is NULL for a platform admin's key
-- (kind 'admin'), which acts on everything.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('org', 'admin')),
    org_id TEXT REFERENCES organisations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'read_write')),
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    -- Written at most once a minute per key.
    last_used_at BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id);

-- POSTs sent with an `Idempotency-Key` header: the first response is kept for 24 hours and
-- replayed for the same key and the same request. `status` is NULL while the first request
-- is still being answered.
CREATE TABLE api_idempotency (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    -- JSON object of the response headers worth replaying (content-type, location, etag).
    headers TEXT,
    body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
