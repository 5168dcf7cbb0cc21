-- Personal eventing (XEP-0163): each account's PEP nodes, with their configuration, and
-- the items published to them. `seq` orders a node's items (the newest is the largest).

CREATE TABLE pep_nodes (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    node TEXT NOT NULL,
    access_model TEXT NOT NULL,
    max_items BIGINT NOT NULL,
    persist_items BIGINT NOT NULL,
    send_last TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, node),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);

CREATE TABLE pep_items (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    seq BIGINT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, node, item_id),
    FOREIGN KEY (vhost, username, node) REFERENCES pep_nodes (vhost, username, node) ON DELETE CASCADE
);
