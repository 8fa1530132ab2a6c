-- The memory's second way to find like shots: a weight-free signature of how the attempt's middle
-- frame looks (scoring/signature.py), carried on quality.scored; null for attempts scored before.
ALTER TABLE memory ADD COLUMN signature real[];
