-- Push notification registrations (XEP-0357): where an account's devices want to be woken.

CREATE TABLE push_registrations (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    app_server TEXT NOT NULL,
    node TEXT NOT NULL,
    -- The client's publish options (an XEP-0004 submit form, XML), sent back with each
    -- notification; empty when none.
    options TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, app_server, node),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
