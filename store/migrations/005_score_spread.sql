-- The spread of each pattern's scores (director.learning.score_precision): the sum of
-- weight * reward^2 in micro-units, an integer like the other sums so replays stay exact.
ALTER TABLE patterns ADD COLUMN square_micros bigint NOT NULL DEFAULT 0;
-- Tables learned before this column: rebuilt from the updates they were folded from.
UPDATE patterns p SET square_micros = u.square_micros
FROM (
    SELECT context, modifier,
           sum(weight * div(round(least(1, greatest(0, reward))::numeric * 1000000)
                            * round(least(1, greatest(0, reward))::numeric * 1000000), 1000000))::bigint AS square_micros
    FROM pattern_updates GROUP BY context, modifier
) u
WHERE p.context = u.context AND p.modifier = u.modifier;
