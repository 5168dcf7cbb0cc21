-- Rookery panel, the uptime overview's order kept in the rows it sorts. The admin overview
-- lists every domain being set up or running, worst first: open incident (oldest first),
-- failing, lowest 24-hour uptime, then by name. Computing that for 10,000 domains on each
-- page view meant joining every domain and open incident and sorting every row; with the
-- rank stored in `probe_status` (kept by `probe::db::rerank` whenever a round is stored,
-- an incident opens or closes, or the domain's state changes) a page is a walk along one
-- index of one table.
ALTER TABLE probe_status ADD COLUMN domain TEXT NOT NULL DEFAULT '';
-- 1 while the domain is provisioning, active or suspended (shown in the overview).
ALTER TABLE probe_status ADD COLUMN listed BIGINT NOT NULL DEFAULT 1;
-- The start of the domain's oldest open incident.
ALTER TABLE probe_status ADD COLUMN incident_since BIGINT;
-- group × 2^52 + incident start × 2^20 + 24-hour uptime in millionths, where the group is
-- 0 open incident, 1 failing, 2 passing, 3 not listed (see `probe::db::RANK`).
ALTER TABLE probe_status ADD COLUMN rank BIGINT NOT NULL DEFAULT 0;

UPDATE probe_status SET
    domain = COALESCE((SELECT d.domain FROM domains d WHERE d.id = probe_status.domain_id), ''),
    listed = CASE WHEN (SELECT d.state FROM domains d WHERE d.id = probe_status.domain_id)
                       IN ('provisioning', 'active', 'suspended') THEN 1 ELSE 0 END,
    incident_since = (SELECT MIN(i.started_at) FROM incidents i
                      WHERE i.domain_id = probe_status.domain_id AND i.ended_at IS NULL);
UPDATE probe_status SET rank =
    CASE WHEN listed = 0 THEN 3 WHEN incident_since IS NOT NULL THEN 0 WHEN up = 0 THEN 1 ELSE 2 END * 4503599627370496
    + CASE WHEN listed <> 0 AND incident_since IS NOT NULL THEN incident_since * 1048576 ELSE 0 END
    + CASE WHEN up_24h + down_24h = 0 THEN 1000000 ELSE up_24h * 1000000 / (up_24h + down_24h) END;

CREATE INDEX probe_status_rank ON probe_status (rank, domain);
