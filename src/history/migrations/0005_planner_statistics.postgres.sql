-- PostgreSQL only (SQLite runs 0005_planner_statistics.sqlite.sql). A
-- scope's id determines its kind, but the planner multiplies the two
-- columns' selectivities: for a rare kind (the portfolio, a segment, a
-- region) it expected one row per scope instead of one per boundary, and
-- so scanned every row of the scope to filter the boundaries asked for
-- (105 ms for a segment's 91 daily rows among 22.8M) instead of seeking
-- each (1.4 ms). The dependency statistics tell it; ANALYZE fills them
-- now, autovacuum keeps them.

CREATE STATISTICS scope_rows_kind_id (dependencies) ON kind, id FROM scope_rows;
ANALYZE scope_rows;
