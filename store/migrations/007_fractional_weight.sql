-- Feedback on a whole scene is spread over its accepted shots, each at a fraction of its source's
-- weight (director.learning.Evidence.weight), so an update's weight is no longer a whole number.
-- The pattern sums stay integers (each increment is rounded once, from its event alone, so a
-- replay rebuilds them exactly); this column records the weight the discounted read
-- (store.queries.evidence_near) multiplies by. Whole weights keep their values.
ALTER TABLE pattern_updates ALTER COLUMN weight TYPE double precision;
