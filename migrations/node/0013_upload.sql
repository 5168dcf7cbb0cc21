-- HTTP file upload (XEP-0363): the files a vhost's users uploaded. The bytes are files on
-- the node's disk (`upload_dir/<vhost>/<id>`); a row is written once the upload completed.
-- Files outlive the account that uploaded them (links to them sit in other people's chats)
-- until the vhost's upload retention deletes them.

CREATE TABLE upload_files (
    vhost TEXT NOT NULL,
    -- 32 random hex digits: the unguessable part of the download URL.
    id TEXT NOT NULL,
    username TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, id)
);
CREATE INDEX upload_files_owner ON upload_files (vhost, username);
CREATE INDEX upload_files_age ON upload_files (vhost, created_at);

-- Secrets of this node, made on first use: `upload_hmac` signs upload slots.
CREATE TABLE node_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
