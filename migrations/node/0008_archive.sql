-- Message archives (XEP-0313) per account, and each account's archiving preferences.
-- `id` is the archive id (also the XEP-0359 stanza-id): time-ordered, so rows sort by
-- (created_us, id) in the order they were archived.

CREATE TABLE archive_messages (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    id TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    with_jid TEXT NOT NULL,
    with_resource TEXT NOT NULL,
    direction TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stanza_bytes BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, id),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
CREATE INDEX archive_messages_time ON archive_messages (vhost, username, created_us, id);
CREATE INDEX archive_messages_with ON archive_messages (vhost, username, with_jid, created_us, id);
CREATE INDEX archive_messages_age ON archive_messages (vhost, created_us);

CREATE TABLE archive_prefs (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    default_mode TEXT NOT NULL,
    always_jids TEXT NOT NULL,
    never_jids TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
