-- Dead letters, as the learner reads them from every input topic's <topic>.dlq: a scene with a
-- dead-lettered event cannot finish, so it is marked failed with the reason. One row per
-- original message, whichever stage dead-lettered it first.
CREATE TABLE scene_failures (
    original_topic     text        NOT NULL,
    original_partition integer     NOT NULL,
    original_offset    bigint      NOT NULL,
    scene_id           text        NOT NULL,   -- the message key: the scene id of Tower's topics
    event_id           text,
    consumer           text        NOT NULL,
    error_class        text        NOT NULL,
    reason             text        NOT NULL,
    failed_at          timestamptz NOT NULL,
    -- Set by `tower dlq redrive` when the message is re-published: the scene may finish after all
    -- (if it fails again, its new dead letter is a new row).
    redriven_at        timestamptz,
    PRIMARY KEY (original_topic, original_partition, original_offset)
);
CREATE INDEX scene_failures_scene ON scene_failures (scene_id);
