-- Multi-user chat (XEP-0045): the persistent rooms of each vhost's `conference.` service,
-- with their configuration (JSON: the muc#roomconfig fields, the subject and the salt of
-- the occupant ids), their affiliations, and the rooms' message archive (XEP-0313 at the
-- room's JID). `id` is an archive id as in `archive_messages` (sorted as its time);
-- `with_jid` is the sender's real bare JID and `with_resource` its nick in the room;
-- `stanza_bytes` is what the row counts against the vhost's storage quota.
-- A temporary room lives in memory only, but its archive is kept here while it exists.

CREATE TABLE muc_rooms (
    vhost TEXT NOT NULL REFERENCES vhosts (domain) ON DELETE CASCADE,
    room TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (vhost, room)
);

CREATE TABLE muc_affiliations (
    vhost TEXT NOT NULL,
    room TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (vhost, room, jid),
    FOREIGN KEY (vhost, room) REFERENCES muc_rooms (vhost, room) ON DELETE CASCADE
);

CREATE TABLE muc_archive (
    vhost TEXT NOT NULL REFERENCES vhosts (domain) ON DELETE CASCADE,
    room TEXT NOT NULL,
    id TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    with_jid TEXT NOT NULL,
    with_resource TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stanza_bytes BIGINT NOT NULL,
    PRIMARY KEY (vhost, room, id)
);
