-- SPEC §15: every account's object (§3.1, without rank) at every UTC day
-- boundary, with the closed day's usage. `vals` is a JSON array:
-- usage.events_day, usage.active_users_day, then the figures of the metric
-- catalogue's account table (src/metric.rs) in its order, as the account
-- object shows them. The account's scopes and tier at that day are columns
-- of their own, so a scope's accounts at a past day can be selected.

CREATE TABLE account_rows (
    account_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    csm_id     TEXT,
    segment    TEXT NOT NULL,
    region     TEXT NOT NULL,
    tier       TEXT NOT NULL,
    vals       TEXT NOT NULL,
    PRIMARY KEY (account_id, at)
);
CREATE INDEX account_rows_at ON account_rows (at);
