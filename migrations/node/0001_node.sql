-- Rookery node storage: virtual hosts and their accounts. Portable between SQLite and
-- PostgreSQL: TEXT keys, BIGINT UTC Unix-second timestamps and 0/1 flags, binary as hex TEXT.

CREATE TABLE vhosts (
    domain TEXT PRIMARY KEY,
    -- PEM files of the vhost's certificate chain and key; NULL: a self-signed certificate is
    -- generated under the data folder.
    cert_path TEXT,
    key_path TEXT,
    created_at BIGINT NOT NULL
);

-- Bumped by every change the running server must notice (vhosts added or removed), so it
-- can poll one row instead of reloading everything.
CREATE TABLE change_counter (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO change_counter (name, value) VALUES ('vhosts', 0);

-- Accounts. Only SCRAM keys are stored (RFC 5802): salted, iterated, per account; never the
-- password.
CREATE TABLE accounts (
    vhost TEXT NOT NULL REFERENCES vhosts (domain) ON DELETE CASCADE,
    username TEXT NOT NULL,
    scram_salt TEXT NOT NULL,
    scram_iterations BIGINT NOT NULL,
    sha1_stored_key TEXT NOT NULL,
    sha1_server_key TEXT NOT NULL,
    sha256_stored_key TEXT NOT NULL,
    sha256_server_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username)
);

-- Messages for accounts with no available session (XEP-0160), delivered at the next
-- available presence, oldest first.
CREATE TABLE offline_messages (
    id TEXT PRIMARY KEY,
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    stanza TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
CREATE INDEX offline_messages_account ON offline_messages (vhost, username, created_at);
