-- SPEC §15: every scope's KPI object at every boundary of
-- history.resolution. `vals` is a JSON array of the figures of the metric
-- catalogue's KPI table (src/metric.rs), in its order, as reported (null
-- where the figure is); new figures are appended to the catalogue, so old
-- rows stay readable.

CREATE TABLE scope_rows (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    at   BIGINT NOT NULL,
    vals TEXT NOT NULL,
    PRIMARY KEY (kind, id, at)
);
CREATE INDEX scope_rows_at ON scope_rows (at);

-- Boundaries whose scope rows were dropped (the engine's history buffer was
-- full while the store was unreachable): the API lists them as gaps.
CREATE TABLE history_gaps (
    from_at BIGINT NOT NULL,
    to_at   BIGINT NOT NULL,
    PRIMARY KEY (from_at, to_at)
);
