-- Tower's memory (director/memory.py, store/memory.py): every scored attempt as text and a text
-- embedding, projected by the learner from quality.scored (one row per score event, per embedder),
-- so `tower replay` rebuilds it. `seq` orders the rows for readers that load them incrementally.
CREATE TABLE memory (
    seq            bigserial   UNIQUE,
    event_id       text        NOT NULL,
    embedder       text        NOT NULL,  -- name/version: a changed embedder is a different memory
    scene_id       text        NOT NULL,
    shot_number    integer     NOT NULL,
    attempt        integer     NOT NULL,
    text           text        NOT NULL,
    vector         real[]      NOT NULL,
    status         text        NOT NULL,
    composite      double precision NOT NULL,
    passed         boolean     NOT NULL,
    modifier       text        NOT NULL,
    frame_uri      text,                  -- the attempt's middle frame, if it has frames
    remembered_at  timestamptz NOT NULL,  -- the score event's time
    PRIMARY KEY (event_id, embedder)
);
CREATE INDEX memory_shot ON memory (scene_id, shot_number, attempt);
