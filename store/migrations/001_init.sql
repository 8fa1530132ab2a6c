-- Read models of the five topics and the learned patterns. Every row is written by the learner
-- stage inside the transaction that records its source event id in processed_events, so a
-- redelivered event changes nothing.

CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Every event seen, as it was: what the projections below are checked against.
CREATE TABLE event_log (
    event_id     text PRIMARY KEY,
    event_type   text        NOT NULL,
    source       text        NOT NULL,
    scene_id     text        NOT NULL,
    session_id   text        NOT NULL,
    causation_id text,
    event_time   timestamptz NOT NULL,
    payload      jsonb       NOT NULL
);
CREATE INDEX event_log_scene ON event_log (scene_id, event_time);

CREATE TABLE sessions (
    session_id  text PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    scene_count integer     NOT NULL DEFAULT 0
);

CREATE TABLE scenes (
    scene_id          text PRIMARY KEY,
    session_id        text        NOT NULL,
    description       text        NOT NULL,
    characters        jsonb       NOT NULL,
    style             text        NOT NULL,
    max_attempts      integer,           -- NULL: the planner's default applied
    quality_threshold double precision,
    requested_at      timestamptz NOT NULL,
    event_id          text        NOT NULL UNIQUE
);
CREATE INDEX scenes_session ON scenes (session_id, requested_at);

CREATE TABLE shots (
    scene_id        text    NOT NULL,
    shot_number     integer NOT NULL,
    shot_count      integer NOT NULL,
    camera_angle    text    NOT NULL,
    camera_movement text    NOT NULL,
    duration        double precision NOT NULL,
    frame_count     integer NOT NULL,
    characters      jsonb   NOT NULL,
    mood            text    NOT NULL,
    lighting        text    NOT NULL,
    action          text    NOT NULL,
    expected_motion double precision NOT NULL,
    overall_mood    text    NOT NULL,
    lighting_suggestions text NOT NULL,
    event_id        text    NOT NULL UNIQUE,
    PRIMARY KEY (scene_id, shot_number)
);

CREATE TABLE attempts (
    scene_id        text    NOT NULL,
    shot_number     integer NOT NULL,
    attempt         integer NOT NULL,
    -- Filled by whichever of shot.planned / prompt.refined / frame.rendered is projected first:
    -- the learner reads the five topics concurrently, so their order is not guaranteed.
    planned_event_id text   UNIQUE,
    prompt          text,
    negative_prompt text,
    seed            bigint,
    modifier        text,
    modifier_probability double precision,
    context         text,
    render_status   text,
    render_reason   text,
    render_ms       double precision,
    backend         text,
    PRIMARY KEY (scene_id, shot_number, attempt)
);

CREATE TABLE frames (
    scene_id    text    NOT NULL,
    shot_number integer NOT NULL,
    attempt     integer NOT NULL,
    frame_index integer NOT NULL,
    uri         text    NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    sha256      text    NOT NULL,
    event_id    text    NOT NULL,
    PRIMARY KEY (scene_id, shot_number, attempt, frame_index)
);

CREATE TABLE scores (
    scene_id       text    NOT NULL,
    shot_number    integer NOT NULL,
    attempt        integer NOT NULL,
    status         text    NOT NULL,
    reason         text,
    composite      double precision NOT NULL,
    passed         boolean NOT NULL,
    final          boolean NOT NULL,
    metrics        jsonb   NOT NULL,
    scorer_version text    NOT NULL,
    device         text    NOT NULL,
    modifier       text    NOT NULL,
    context        text    NOT NULL,
    scored_at      timestamptz NOT NULL,
    event_id       text    NOT NULL UNIQUE,
    -- A retry is produced after the transaction commits and marked here once the broker has it:
    -- a crash in between re-sends it on redelivery; a replay of an applied event does not.
    retry_sent     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (scene_id, shot_number, attempt)
);

-- Beta posterior per (context, modifier) in micro-units: integer sums are order-independent,
-- so a replay in any partition interleaving rebuilds the same table exactly.
CREATE TABLE patterns (
    context      text   NOT NULL,
    modifier     text   NOT NULL,
    alpha_micros bigint NOT NULL,
    beta_micros  bigint NOT NULL,
    observations integer NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (context, modifier)
);

CREATE TABLE pattern_updates (
    event_id     text PRIMARY KEY,
    scene_id     text    NOT NULL,
    shot_number  integer NOT NULL,
    attempt      integer NOT NULL,
    context      text    NOT NULL,
    modifier     text    NOT NULL,
    reward       double precision NOT NULL,
    alpha_micros bigint  NOT NULL,
    beta_micros  bigint  NOT NULL,
    observations integer NOT NULL
);
CREATE INDEX pattern_updates_scene ON pattern_updates (scene_id);

-- The refiner's decision per shot.planned event. A redelivered shot.planned (a crash, a
-- rebalance, a re-sent retry) must get the same modifier and seed under the same derived
-- prompt.refined id, even though the pattern table has moved on since.
CREATE TABLE refinements (
    planned_event_id text PRIMARY KEY,
    prompt           jsonb       NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT now()
);
