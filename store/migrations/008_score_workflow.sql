-- A score's workflow (the last field of its pattern context) in a column of its own, so SQL never
-- splits the context key: a label containing '|' (director/context.py escapes it) had moved a
-- score to another workflow in the trends and the regression check. Scores projected before this
-- migration were keyed without escapes: their fourth field is what they always counted as.
ALTER TABLE scores ADD COLUMN workflow text;
UPDATE scores SET workflow = split_part(context, '|', 4) WHERE context IS NOT NULL;
CREATE INDEX scores_credited_workflow ON scores (workflow, scored_at) WHERE credited AND status = 'ok';
