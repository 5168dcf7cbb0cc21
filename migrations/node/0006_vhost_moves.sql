-- Vhosts taking part in a move between nodes (the control API's PUT /v1/vhosts/{d}/move),
-- portable like 0001. While a vhost has a row here it is frozen: nothing writes its data,
-- so the copy the panel exported stays whole until the vhost is removed; with redirect_to
-- set, its clients are also sent to the node that serves it now. Kept in the store (not
-- in the spec, whose generation belongs to the panel) so a restarted node stays frozen.

CREATE TABLE vhost_moves (
    domain TEXT PRIMARY KEY REFERENCES vhosts (domain) ON DELETE CASCADE,
    -- host or host:port for <see-other-host/>; NULL: frozen, sessions stay.
    redirect_to TEXT,
    frozen_at BIGINT NOT NULL
);
