// A scene as the panel knows it: built from the live events (SSE) and merged with the API's
// projection of the scene (frames, retry reasons, accepted attempts). Events of different topics
// may arrive in any interleaving, so every field only moves forward.

export const TOPICS = [
  'scene.requested', 'shot.planned', 'prompt.refined', 'render.progress', 'frame.rendered', 'quality.scored',
  'feedback.submitted',
]
export const STAGES = ['planned', 'refined', 'rendering', 'rendered', 'scored']
const STAGE_OF_TOPIC = {
  'shot.planned': 1, 'prompt.refined': 2, 'render.progress': 3, 'frame.rendered': 4, 'quality.scored': 5,
}

export function newScene(id, sessionId, description = '') {
  return {
    id, sessionId, description, characters: [], style: '', status: 'waiting', connection: 'idle',
    shotCount: null, overallMood: '', lighting: '', shots: {}, feedback: [], failure: null, events: 0,
    assembly: null,
  }
}

function shotOf(scene, number) {
  if (!scene.shots[number]) {
    scene.shots[number] = {
      number, count: scene.shotCount, spec: null, maxAttempts: null, threshold: null, accepted: null, attempts: {},
    }
  }
  return scene.shots[number]
}

function attemptOf(shot, n) {
  if (!shot.attempts[n]) {
    shot.attempts[n] = {
      attempt: n, stage: 0, progress: null, progressKind: null, step: null, steps: null, queuePosition: null,
      modifier: null, probability: null, context: null, frames: [], renderStatus: null, renderReason: null,
      renderMs: null, backend: null, score: null, retryReason: null, escalation: null,
    }
  }
  return shot.attempts[n]
}

const mediaUrl = (uri) => `/media/${uri.split('/').map(encodeURIComponent).join('/')}`

function fromShotAttempt(scene, ev) {
  const shot = shotOf(scene, ev.shot.shot_number)
  shot.spec = { ...(shot.spec || {}), ...ev.shot }
  shot.count = ev.shot.shot_count
  scene.shotCount = scene.shotCount ?? ev.shot.shot_count
  shot.maxAttempts = ev.max_attempts
  shot.threshold = ev.quality_threshold
  return [shot, attemptOf(shot, ev.attempt)]
}

function derivedRetryReason(shot, n) {
  const previous = shot.attempts[n - 1]
  if (!previous?.score) return null
  if (previous.score.status !== 'ok') return `attempt ${n - 1} failed: ${previous.score.reason || 'see its render'}`
  return `attempt ${n - 1} scored ${previous.score.composite.toFixed(3)}, under the threshold ${Number(shot.threshold).toFixed(2)}`
}

/** Apply one event (the `data` of an SSE message) to the scene. */
export function applyEvent(scene, topic, ev) {
  scene.events += 1
  if (!ev) return
  if (topic === 'scene.requested') {
    scene.description = ev.description
    scene.characters = ev.characters || []
    scene.style = ev.style || ''
    return
  }
  if (topic === 'render.progress') {
    const shot = shotOf(scene, ev.shot_number)
    const a = attemptOf(shot, ev.attempt)
    a.stage = Math.max(a.stage, 3)
    a.progressKind = ev.kind
    a.backend = ev.backend
    if (ev.queue_position != null) a.queuePosition = ev.queue_position
    if (ev.step != null) { a.step = ev.step; a.steps = ev.steps }
    const fraction = ev.kind === 'finished' || ev.kind === 'cached' ? 1 : ev.fraction
    if (fraction != null) a.progress = Math.max(a.progress ?? 0, fraction)
    return
  }
  if (!ev.shot || !(topic in STAGE_OF_TOPIC)) return
  const [shot, a] = fromShotAttempt(scene, ev)
  a.stage = Math.max(a.stage, STAGE_OF_TOPIC[topic])
  if (topic === 'shot.planned') {
    scene.overallMood = ev.overall_mood
    scene.lighting = ev.lighting_suggestions
  }
  if (ev.escalation) a.escalation = ev.escalation
  if (ev.retry_reason) a.retryReason = ev.retry_reason // the event says why; older ones do not
  if (ev.prompt) {
    a.modifier = ev.prompt.modifier
    a.probability = ev.prompt.modifier_probability
    a.context = ev.prompt.context
  }
  if (topic === 'frame.rendered') {
    a.renderStatus = ev.status
    a.renderReason = ev.reason
    a.renderMs = ev.render_ms
    a.backend = ev.backend
    a.progress = ev.status === 'ok' ? 1 : a.progress
    if (ev.frames?.length) a.frames = ev.frames.map((f) => ({ index: f.index, url: mediaUrl(f.uri) }))
  }
  if (topic === 'quality.scored') {
    a.score = {
      status: ev.status, composite: ev.composite, passed: ev.passed, metrics: ev.metrics || {}, reason: ev.reason,
      final: ev.passed || ev.attempt >= ev.max_attempts,
    }
    const next = shot.attempts[ev.attempt + 1]
    if (next && !next.retryReason) next.retryReason = derivedRetryReason(shot, ev.attempt + 1)
  }
  if (ev.attempt > 1 && !a.retryReason) a.retryReason = derivedRetryReason(shot, ev.attempt)
}

/** Merge the API's view of the scene (GET /api/director/scenes/{id}). */
export function mergeDetail(scene, detail) {
  const s = detail.scene
  scene.description = s.description
  scene.sessionId = s.session_id
  scene.characters = s.characters
  scene.style = s.style
  scene.shotCount = s.shot_count ?? scene.shotCount
  scene.projected = s.status
  if (['complete', 'needs_review'].includes(s.status)) scene.status = s.status
  scene.overallMood = detail.overall_mood || scene.overallMood
  scene.lighting = detail.lighting_suggestions || scene.lighting
  scene.feedback = detail.feedback || []
  scene.assembly = detail.assembly ?? scene.assembly
  for (const d of detail.shots) {
    const shot = shotOf(scene, d.shot_number)
    shot.spec = { ...(shot.spec || {}), ...d }
    delete shot.spec.attempts
    shot.count = d.shot_count
    shot.maxAttempts = d.max_attempts ?? shot.maxAttempts
    shot.threshold = d.quality_threshold ?? shot.threshold
    shot.accepted = d.accepted_attempt ?? shot.accepted
    for (const at of d.attempts) {
      const a = attemptOf(shot, at.attempt)
      const stage = at.score ? 5 : at.render_status ? 4 : at.modifier ? 2 : 1
      a.stage = Math.max(a.stage, stage)
      a.modifier = at.modifier ?? a.modifier
      a.probability = at.modifier_probability ?? a.probability
      a.context = at.context ?? a.context
      a.renderStatus = at.render_status ?? a.renderStatus
      a.renderReason = at.render_reason ?? a.renderReason
      a.renderMs = at.render_ms ?? a.renderMs
      a.backend = at.backend ?? a.backend
      if (at.render_status === 'ok') a.progress = 1
      if (at.frames?.length) a.frames = at.frames.map((f) => ({ index: f.index, url: f.url }))
      if (at.retry_reason) a.retryReason = at.retry_reason
      if (at.escalation) a.escalation = at.escalation
      if (at.score) {
        a.score = {
          status: at.score.status, composite: at.score.composite, passed: at.score.passed,
          metrics: at.score.metrics || {}, reason: at.score.reason, final: at.score.final,
        }
      }
    }
  }
}

export const attemptList = (shot) => Object.values(shot.attempts).sort((x, y) => x.attempt - y.attempt)
export const shotList = (scene) => Object.values(scene.shots).sort((x, y) => x.number - y.number)

export function latestAttempt(shot) {
  const all = attemptList(shot)
  return all[all.length - 1] || null
}

/** The attempt that stands for the shot: the accepted one, else the best scored once final. */
export function acceptedAttempt(shot) {
  if (shot.accepted != null && shot.attempts[shot.accepted]) return shot.attempts[shot.accepted]
  const latest = latestAttempt(shot)
  if (!latest?.score?.final) return null
  const scored = attemptList(shot).filter((a) => a.score?.status === 'ok')
  return scored.sort((x, y) => y.score.composite - x.score.composite)[0] || latest
}

/** Where the shot stands: planned, refined, rendering, rendered, scored; then accepted, retrying or kept. */
export function shotState(shot) {
  const latest = latestAttempt(shot)
  if (!latest) return 'waiting'
  if (latest.score) {
    if (latest.score.passed) return 'accepted'
    return latest.score.final ? 'kept' : 'retrying'
  }
  return STAGES[Math.max(0, latest.stage - 1)]
}

export const STATE_LABELS = {
  waiting: 'waiting', planned: 'planned', refined: 'prompt refined', rendering: 'rendering', rendered: 'rendered',
  scored: 'scored', accepted: 'accepted', retrying: 'retrying', kept: 'needs human review',
}

export const isFinal = (shot) => ['accepted', 'kept'].includes(shotState(shot))

export function sceneDone(scene) {
  const shots = shotList(scene)
  return scene.shotCount != null && shots.length >= scene.shotCount && shots.every(isFinal)
}

/** One line for screen readers when a shot changes state (not for every progress tick). */
export function announceLine(shot) {
  const state = shotState(shot)
  const latest = latestAttempt(shot)
  const n = `Shot ${shot.number}`
  if (state === 'accepted') return `${n}: attempt ${latest.attempt} accepted, score ${latest.score.composite.toFixed(2)}.`
  if (state === 'kept') {
    const best = acceptedAttempt(shot)
    return `${n}: needs human review: no attempt reached the threshold; attempt ${best.attempt} kept, score ${best.score.composite.toFixed(2)}.`
  }
  if (state === 'retrying') return `${n}: attempt ${latest.attempt} scored ${latest.score.composite.toFixed(2)}, retrying.`
  return `${n}: attempt ${latest?.attempt ?? 1} ${STATE_LABELS[state]}.`
}
