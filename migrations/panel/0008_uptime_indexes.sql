-- Rookery panel, uptime indexes: the pages that show many domains at once ask, for each
-- domain, whether it has an open incident. `incidents_domain` holds every incident (a few
-- per domain and growing), and the open ones are found only by reading each row; this
-- partial index holds just the open ones, a handful on a healthy platform.
CREATE INDEX incidents_open ON incidents (domain_id, started_at) WHERE ended_at IS NULL;
