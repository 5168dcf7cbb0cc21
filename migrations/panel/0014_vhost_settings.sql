-- Rookery panel, the rest of the vhost spec: a plan's offline message retention, and a
-- domain's XEP-0157 contact addresses and its own TLS certificate. Each reaches the node
-- in the spec the reconciler pushes (`nodes::reconcile::spec_for`).

-- Days an offline message waits for its recipient; NULL: the node's default (kept until
-- delivered).
ALTER TABLE plans ADD COLUMN offline_days BIGINT;

-- Contact addresses as a JSON object, kind → URIs, e.g.
-- {"abuse": ["mailto:abuse@example.com"], "support": ["xmpp:help@example.com"]}.
ALTER TABLE domains ADD COLUMN contacts TEXT NOT NULL DEFAULT '{}';
-- The customer's certificate chain (PEM, leaf first) and its private key, sealed under the
-- panel's secret key (context `domain-tls-key:<domain id>`). Both NULL: the node serves a
-- certificate of its own.
ALTER TABLE domains ADD COLUMN tls_cert_pem TEXT;
ALTER TABLE domains ADD COLUMN tls_key_sealed TEXT;
