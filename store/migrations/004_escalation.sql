-- The escalation ladder (director/escalation.py): what each attempt changed and why it was made,
-- and whether its score was credited to its modifier (first attempts only).
ALTER TABLE attempts ADD COLUMN escalation text, ADD COLUMN retry_reason text,
    ADD COLUMN steps integer, ADD COLUMN cfg double precision;
ALTER TABLE scores ADD COLUMN escalation text, ADD COLUMN credited boolean;
-- The refiner reads a context's neighbours' evidence (borrowed priors, discounting) by workflow.
CREATE INDEX pattern_updates_context ON pattern_updates (context);
-- Regression alerts (director/alerts.py): one per workflow version, sent once the broker has it.
CREATE TABLE regression_alerts (
    workflow          text PRIMARY KEY,
    previous_workflow text        NOT NULL,
    detected_at       timestamptz NOT NULL,
    alert             jsonb       NOT NULL,
    sent              boolean     NOT NULL DEFAULT false
);
-- Character designs given with a scene, kept for later scenes and sessions naming the character
-- (the latest request wins, by event time, so a replay rebuilds the same rows).
CREATE TABLE character_sheets (
    name_key   text PRIMARY KEY,  -- lower-cased name
    name       text        NOT NULL,
    sheet      text        NOT NULL,
    updated_at timestamptz NOT NULL,
    event_id   text        NOT NULL
);
-- Credited scores per workflow version and when it was first seen: the regression check's
-- index, kept in the learner's transaction so a replay rebuilds it exactly.
CREATE TABLE workflow_versions (
    workflow   text PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    samples    integer     NOT NULL
);
CREATE INDEX workflow_versions_first_seen ON workflow_versions (first_seen);
