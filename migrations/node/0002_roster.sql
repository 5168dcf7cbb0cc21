-- Rosters and presence subscriptions (RFC 6121), portable between SQLite and PostgreSQL
-- like 0001: TEXT keys, BIGINT 0/1 flags and UTC Unix-second timestamps.

-- One row per (account, contact) the server knows something about: a roster item
-- (listed = 1), or only a pending inbound subscription request (listed = 0), which RFC 6121
-- §3.1.3 says must not appear on the roster until the user answers it.
CREATE TABLE roster_contacts (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    -- The contact's bare JID, normalised (RFC 7622).
    contact TEXT NOT NULL,
    listed BIGINT NOT NULL,
    name TEXT,
    -- Group names joined by newlines (a backslash escapes a newline or itself).
    group_names TEXT NOT NULL,
    -- 'none', 'to', 'from' or 'both'.
    subscription TEXT NOT NULL,
    -- The user's request is unanswered (ask='subscribe').
    pending_out BIGINT NOT NULL,
    -- The contact's request is unanswered; `request` holds it as it arrived.
    pending_in BIGINT NOT NULL,
    request TEXT,
    -- A subscription pre-approved before the contact asked (RFC 6121 §3.4).
    approved BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, contact),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);

-- The roster version of each account (XEP-0237), bumped by every change. The epoch is
-- random per account row, so an account deleted and created again never repeats a version.
-- Changes take this row first, which serialises them per account on both engines.
CREATE TABLE roster_versions (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    epoch TEXT NOT NULL,
    counter BIGINT NOT NULL,
    PRIMARY KEY (vhost, username),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
