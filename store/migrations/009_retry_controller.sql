-- The retry controller's own state (agents/retrier.py): one row per scored attempt it has
-- decided, written once the broker has the attempt's follow-up (a retry, a review request, or
-- nothing). A redelivered score finds its row and sends nothing again; a score whose row is
-- missing (a crash between the send and this write) is decided again, to the same event id.
-- The shot's best attempt, which a workflow-setting retry and a review request name, is read
-- from these rows, not from the learner's projections, so the two stages never wait on each other.
CREATE TABLE retry_decisions (
    scene_id    text    NOT NULL,
    shot_number integer NOT NULL,
    attempt     integer NOT NULL,
    event_id    text    NOT NULL,  -- the quality.scored event decided
    ok          boolean NOT NULL,  -- scored (status ok): a candidate for the shot's best attempt
    composite   double precision NOT NULL,
    modifier    text    NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scene_id, shot_number, attempt)
);

-- Until now the learner decided follow-ups and flagged them in scores.retry_sent. The attempts it
-- had settled (a follow-up sent, or a pass: nothing to send) are settled for the controller too,
-- so a controller whose new consumer group starts from the topic's beginning re-sends nothing.
INSERT INTO retry_decisions (scene_id, shot_number, attempt, event_id, ok, composite, modifier, decided_at)
SELECT scene_id, shot_number, attempt, event_id, status = 'ok', composite, modifier, scored_at
FROM scores WHERE retry_sent OR passed;

ALTER TABLE scores DROP COLUMN retry_sent;
