-- The escalation ladder (director/escalation.py): what each attempt changed and why it was made,
-- and whether its score was credited to its modifier (first attempts only).
ALTER TABLE attempts ADD COLUMN escalation text, ADD COLUMN retry_reason text,
    ADD COLUMN steps integer, ADD COLUMN cfg double precision;
ALTER TABLE scores ADD COLUMN escalation text, ADD COLUMN credited boolean;
