"""The timings of finished scenes, for :func:`director.eta.estimate`.

A scene is finished when every planned shot has a final score; its time is from its request to
the last of those scores (event times, so a replay gives the same figures). Scenes are matched by
the workflow their scores were rendered with (the last field of the pattern context), so a
preset's or template's history is its own.
"""

from __future__ import annotations

import asyncpg

from director.eta import HISTORY, SceneTiming

_TIMINGS = """
WITH finished AS (
  SELECT s.scene_id, max(s.scored_at) AS done, count(*) FILTER (WHERE s.final) AS finals
  FROM scores s WHERE s.workflow = $1 GROUP BY s.scene_id
), planned AS (
  SELECT scene_id, count(*) AS shots, max(shot_count) AS shot_count, sum(frame_count) AS frames
  FROM shots WHERE scene_id IN (SELECT scene_id FROM finished) GROUP BY scene_id
)
SELECT p.frames, extract(epoch FROM f.done - sc.requested_at) AS seconds
FROM finished f JOIN planned p USING (scene_id) JOIN scenes sc USING (scene_id)
WHERE p.shots = p.shot_count AND f.finals >= p.shot_count
ORDER BY f.done DESC LIMIT $2
"""


async def scene_timings(conn: asyncpg.Connection | asyncpg.Pool, workflow: str) -> list[SceneTiming]:
    """The latest finished scenes of ``workflow``, newest first."""
    rows = await conn.fetch(_TIMINGS, workflow, HISTORY)
    return [SceneTiming(int(r["frames"]), float(r["seconds"])) for r in rows]
