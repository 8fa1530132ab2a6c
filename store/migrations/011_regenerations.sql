-- Shots a person asked to regenerate (POST .../shots/{n}/regenerate, `tower regenerate`): one row
-- per distinct request, so the same request twice starts one render, and two requests for one
-- shot get attempts of their own. `published`: the broker has the attempt's shot.planned (a
-- request repeated before that publishes it again, under the same event id).
CREATE TABLE regenerations (
    request_id   text        PRIMARY KEY,  -- sha256 of the scene, shot and direction
    scene_id     text        NOT NULL,
    shot_number  integer     NOT NULL,
    attempt      integer     NOT NULL,
    event_id     text        NOT NULL,
    payload      jsonb       NOT NULL,     -- the shot.planned value
    published    boolean     NOT NULL DEFAULT false,
    requested_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scene_id, shot_number, attempt)
);
