-- SPEC §15: the alert log (every transition, its §5.3 message) and the tier
-- log (every change of an account's tier, with its cause). Instants are
-- microseconds since the Unix epoch, in event time.

CREATE TABLE alert_log (
    alert_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    ts         BIGINT NOT NULL,
    rule       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    scope      TEXT NOT NULL,
    scope_id   TEXT NOT NULL,
    account_id TEXT,
    csm_id     TEXT,
    body       TEXT NOT NULL,
    PRIMARY KEY (alert_id, state, version)
);
CREATE INDEX alert_log_account ON alert_log (account_id, ts);
CREATE INDEX alert_log_ts ON alert_log (ts);

CREATE TABLE tier_log (
    account_id TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    from_tier  TEXT,
    to_tier    TEXT NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    cause      TEXT NOT NULL,
    PRIMARY KEY (account_id, ts, seq)
);
CREATE INDEX tier_log_ts ON tier_log (ts);
