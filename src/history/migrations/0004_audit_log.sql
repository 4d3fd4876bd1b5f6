-- SPEC §18: the audit trail. Every authenticated request, subscription and
-- download is one row; `at` is wall time in microseconds since the epoch.
-- Rows are appended once (never replayed), so the table needs no key.

CREATE TABLE audit_log (
    at      BIGINT NOT NULL,
    subject TEXT NOT NULL,
    role    TEXT NOT NULL,
    csm_id  TEXT,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_subject_at ON audit_log (subject, at);
