-- SQLite: nothing to do (see 0005_planner_statistics.postgres.sql; SQLite
-- seeks each listed boundary of a scope whatever the statistics).

SELECT 1;
