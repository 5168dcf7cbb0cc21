-- Private XML storage (XEP-0049): one element per account, namespace and element name.

CREATE TABLE private_storage (
    vhost TEXT NOT NULL,
    username TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    xml TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, username, namespace, name),
    FOREIGN KEY (vhost, username) REFERENCES accounts (vhost, username) ON DELETE CASCADE
);
