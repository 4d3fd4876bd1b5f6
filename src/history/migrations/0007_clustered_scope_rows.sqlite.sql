-- SQLite: the scope rows clustered by their key (a table WITHOUT ROWID), so
-- a scope's rows are one run of the b-tree with their figures in it. In the
-- rowid table each row read through the key index cost a second seek into
-- the table, where a boundary's rows of all scopes sit together and a
-- scope's rows are spread over as many pages as it has rows: that second
-- seek was half of a 90-day hourly answer's time (load-tests README). The
-- copy is made once, in key order.
CREATE TABLE scope_rows_clustered (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    at   BIGINT NOT NULL,
    vals TEXT NOT NULL,
    PRIMARY KEY (kind, id, at)
) WITHOUT ROWID;
INSERT INTO scope_rows_clustered (kind, id, at, vals)
    SELECT kind, id, at, vals FROM scope_rows ORDER BY kind, id, at;
DROP TABLE scope_rows;
ALTER TABLE scope_rows_clustered RENAME TO scope_rows;
CREATE INDEX scope_rows_at ON scope_rows (at);
