-- SPEC §16: the delivery ledger. Every message is a row, keyed by its
-- deterministic idempotency key (also the webhook-id and the email's
-- Message-ID), so planning it again (a restart rewriting the alert log)
-- changes nothing. Instants are wall-clock microseconds since the Unix epoch.
CREATE TABLE deliveries (
    id          TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL,
    refs        TEXT NOT NULL,
    destination TEXT NOT NULL,
    dest_kind   TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    -- A csm recipient's book at planning: the message is cancelled if the
    -- account has left it when it is due.
    account_id  TEXT,
    book        TEXT,
    severity    TEXT,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    next_at     BIGINT NOT NULL,
    sent_at     BIGINT,
    payload     TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (status, next_at);
CREATE INDEX deliveries_created ON deliveries (created_at);

-- Alerts waiting to go out together (a route's group_window or digest): at
-- `due_at` the members of a group become one message whose id is a digest
-- of their keys, in the same transaction that deletes them.
CREATE TABLE delivery_members (
    member_key  TEXT NOT NULL PRIMARY KEY,
    group_key   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    destination TEXT NOT NULL,
    dest_kind   TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    account_id  TEXT,
    book        TEXT,
    severity    TEXT,
    created_at  BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX delivery_members_due ON delivery_members (due_at);
CREATE INDEX delivery_members_group ON delivery_members (group_key);

-- Unsubscribe links (one per person and route) that were followed.
CREATE TABLE unsubscribed (
    person TEXT NOT NULL,
    route  TEXT NOT NULL,
    at     BIGINT NOT NULL,
    PRIMARY KEY (person, route)
);
