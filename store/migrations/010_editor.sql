-- The editor's own state (agents/editor.py): every scored attempt it has seen, with what a cut
-- needs (the plan's shot, the frames, the score), and the assemblies it has sent. Kept apart from
-- the learner's projections, so the editor never waits on the learner.
CREATE TABLE editor_takes (
    scene_id    text    NOT NULL,
    shot_number integer NOT NULL,
    attempt     integer NOT NULL,
    event_id    text    NOT NULL,  -- the quality.scored event; the first scoring of an attempt is kept
    session_id  text    NOT NULL,
    take        jsonb   NOT NULL,  -- the quality.scored value
    PRIMARY KEY (scene_id, shot_number, attempt)
);

-- One row per distinct cut of a scene: the inputs' digest names the files and the event id, and
-- `sent` says the broker has its scene.assembled (a redelivery before that sends it again).
CREATE TABLE editor_assemblies (
    scene_id       text        NOT NULL,
    inputs_sha256  text        NOT NULL,
    event_id       text        NOT NULL,
    sent           boolean     NOT NULL DEFAULT false,
    assembled_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scene_id, inputs_sha256)
);

-- The scene.reassemble requests the editor has answered (once the broker has the answer), so a
-- replay of the requests writes and sends nothing again.
CREATE TABLE editor_requests (
    event_id    text        PRIMARY KEY,
    scene_id    text        NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now()
);

-- The learner's projection of scene.assembled: the scene's latest cut, for the API and the CLI.
CREATE TABLE scene_assemblies (
    scene_id      text        PRIMARY KEY,
    event_id      text        NOT NULL,
    assembled_at  timestamptz NOT NULL,
    inputs_sha256 text        NOT NULL,
    payload       jsonb       NOT NULL
);
