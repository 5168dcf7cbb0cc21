-- Rookery panel, outbound webhooks: endpoints an organisation registers (in the panel or
-- the API) for events about its domains, accounts and invoices. Deliveries to them go
-- through the alerts outbox (`deliveries`), marked with the endpoint they are for.

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- '*' for every event type, else the subscribed types separated by spaces.
    events TEXT NOT NULL,
    -- The signing secret (`whsec_…`), sealed under the panel's secret key.
    secret_sealed TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, id);

-- A delivery to an endpoint is signed with the endpoint's current secret at each attempt
-- (so a rotation applies to pending retries); its log goes when the endpoint does.
ALTER TABLE deliveries ADD COLUMN endpoint_id TEXT REFERENCES webhook_endpoints (id) ON DELETE CASCADE;
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);
