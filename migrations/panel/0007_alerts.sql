-- Rookery panel, alerts: each organisation's alert contacts, a generic outbox of outgoing
-- deliveries (email, signed webhooks, XMPP messages) with every attempt logged, and the
-- system account alerts are sent from over XMPP.

-- Where an organisation's alerts go. No row: email to the organisation's owners, nothing
-- else. An empty column switches its channel off.
CREATE TABLE alert_contacts (
    org_id TEXT PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    email TEXT NOT NULL DEFAULT '',
    webhook_url TEXT NOT NULL DEFAULT '',
    -- The webhook signing secret, sealed under the panel's secret key.
    webhook_secret_sealed TEXT,
    xmpp_jid TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);

-- One row per event and destination: the work queue of the delivery worker. Generic, so
-- outbound webhooks other than alerts use it too. A worker claims a due row by moving its
-- next_attempt_at forward (the lease) with its own claim token, and only the holder of
-- that token records the outcome.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    -- The organisation it is for; NULL for the platform's admins.
    org_id TEXT REFERENCES organisations (id) ON DELETE CASCADE,
    -- The event: the same id and payload for each of its destinations.
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The event as JSON: the webhook body, and what the email and chat texts are made of.
    payload TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'webhook', 'xmpp')),
    -- An email address, a URL or a JID.
    target TEXT NOT NULL,
    -- The webhook signing secret, sealed (NULL for the other channels).
    secret_sealed TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claim_token TEXT,
    -- Retries stop (status failed) once the next one would fall after this.
    give_up_at BIGINT NOT NULL,
    last_attempt_at BIGINT,
    last_http_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (event_id, channel, target)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_org ON deliveries (org_id, created_at);
CREATE INDEX deliveries_created ON deliveries (created_at);

-- Every attempt, for the delivery log.
CREATE TABLE delivery_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    http_status BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, at);

-- The account XMPP alerts are sent from (`rookery-alerts@<alerts.xmpp_sender_domain>`), a
-- system account on the node serving that domain; its password sealed like node secrets.
CREATE TABLE alert_senders (
    domain TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    username TEXT NOT NULL,
    password_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
