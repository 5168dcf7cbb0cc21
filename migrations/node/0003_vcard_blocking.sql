-- vCards (XEP-0054), block lists (XEP-0191) and last activity (XEP-0012) per account.

CREATE TABLE vcards (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    vcard TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);

CREATE TABLE blocklist (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    blocked_jid TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, blocked_jid),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);

CREATE TABLE last_activity (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (vhost, username),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);

-- Runtime switch: log this vhost's stanzas (credentials redacted) for debugging.
ALTER TABLE vhosts ADD COLUMN debug_log BIGINT NOT NULL DEFAULT 0;
