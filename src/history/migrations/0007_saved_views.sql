-- SPEC §19: saved views, per subject (the token's `sub`). `view` is the
-- view object as JSON; `page` and `wall` are also columns for the queries.
-- A wall display loads a view by name, so wall views' names are unique
-- across subjects (the partial index; a second one is refused).

CREATE TABLE saved_views (
    subject    TEXT NOT NULL,
    name       TEXT NOT NULL,
    page       TEXT NOT NULL,
    wall       BIGINT NOT NULL,
    pinned     BIGINT NOT NULL,
    view       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (subject, name)
);
CREATE UNIQUE INDEX saved_views_wall_name ON saved_views (name) WHERE wall = 1;
