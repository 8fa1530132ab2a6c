-- Feedback from people and other systems, batches of scenes, and the source of each pattern update.

-- One row per feedback.submitted event (a request with a rating and scores makes two events).
CREATE TABLE feedback (
    event_id     text PRIMARY KEY,
    feedback_id  text        NOT NULL,
    scene_id     text        NOT NULL,
    shot_number  integer     NOT NULL,
    attempt      integer     NOT NULL,
    source       text        NOT NULL,   -- human | external
    rating       integer,
    comment      text,
    scores       jsonb       NOT NULL,
    reward       double precision NOT NULL,
    context      text        NOT NULL,
    modifier     text        NOT NULL,
    submitted_at timestamptz NOT NULL
);
CREATE INDEX feedback_attempt ON feedback (scene_id, shot_number, attempt);

-- auto (the scorer), human (a rating) or external (scores measured elsewhere).
ALTER TABLE pattern_updates ADD COLUMN source text NOT NULL DEFAULT 'auto';
ALTER TABLE pattern_updates ADD COLUMN weight integer NOT NULL DEFAULT 1;
ALTER TABLE pattern_updates ADD COLUMN updated_at timestamptz;

-- Written by the API when a batch is submitted and by the learner from each scene.requested of
-- the batch (which carries batch_id and batch_size), so a replay rebuilds it too.
CREATE TABLE batches (
    batch_id   text PRIMARY KEY,
    size       integer     NOT NULL,
    created_at timestamptz NOT NULL
);
ALTER TABLE scenes ADD COLUMN batch_id text;
CREATE INDEX scenes_batch ON scenes (batch_id) WHERE batch_id IS NOT NULL;

-- Trends group scores by day, pattern and workflow.
CREATE INDEX scores_scored_at ON scores (scored_at);
