-- The memory prior (director/memory.py: memory_prior) reads remembered outcomes of the same workflow
-- (a render model's response is its own) that were credited to their modifier (first attempts, not
-- directed ones): both kept per row, filled for rows remembered before from their score.
ALTER TABLE memory ADD COLUMN workflow text, ADD COLUMN credited boolean NOT NULL DEFAULT false;
UPDATE memory m SET workflow = s.workflow, credited = coalesce(s.credited, false)
FROM scores s WHERE s.event_id = m.event_id;
