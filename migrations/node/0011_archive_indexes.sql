-- Archive ids sort as their times (11 base-32 digits of microseconds, then the node's
-- tag), so queries order by id alone and turn a time range into an id range: the primary
-- key (vhost, username, id) serves them, and the index by time was a second copy of it.
-- Each index costs a random page write per archived message, the archive's main cost
-- (measured with benches/archive_writes.rs), so the two go and the `with` index loses
-- its time column.

DROP INDEX archive_messages_time;
DROP INDEX archive_messages_with;
CREATE INDEX archive_messages_with ON archive_messages (vhost, username, with_jid, id);
