-- PostgreSQL: nothing to do (see 0007_clustered_scope_rows.sqlite.sql; its
-- index scans read the heap in few pages per scope already, helped by the
-- statistics of migration 5).
SELECT 1;
