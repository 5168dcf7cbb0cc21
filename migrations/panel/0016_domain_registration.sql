-- Rookery panel: XEP-0077 in-band registration, switched per domain on its settings page
-- ("Let people create accounts from their XMPP app") or through the API. 1: the node lets
-- anyone create an account on the domain from their app, within the plan's account limit.
-- Sent to the node as the spec's `features.registration` (`nodes::reconcile::spec_for`).
ALTER TABLE domains ADD COLUMN registration BIGINT NOT NULL DEFAULT 0;
