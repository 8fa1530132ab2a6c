// Tower's HTTP API, same origin (the API serves the panel). Writes carry the bearer token when one
// is set; errors are RFC 9457 problem details, whose `detail` says what to do.

const TOKEN_KEY = 'tower.panel.token'

export function savedToken() {
  try { return localStorage.getItem(TOKEN_KEY) || '' } catch { return '' }
}

export function saveToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token)
    else localStorage.removeItem(TOKEN_KEY)
  } catch { /* storage disabled: the token lasts for this page only */ }
}

export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail)
    this.status = status
    this.problem = problem
  }
}

export async function api(path, { method = 'GET', body, token = savedToken() } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' }
  if (token) headers.Authorization = `Bearer ${token}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch (error) {
    throw new ApiError(0, `Tower's API did not answer (${error.message}); is \`tower api\` running?`)
  }
  const text = await response.text()
  let data = null
  try { data = text ? JSON.parse(text) : null } catch { data = null }
  if (!response.ok) {
    const detail = data?.detail || data?.title || `${response.status} ${response.statusText}`
    throw new ApiError(response.status, detail, data)
  }
  return data
}

// Seconds a read of a just-submitted scene or its session waits, on the server, for the learner to
// project it (the API bounds it by TOWER_API_SCENE_WAIT_S): retrying on 404 instead would log each
// 404 as a console error.
export const PROJECTION_WAIT_S = 20
const waiting = (path, wait) => (wait ? `${path}?wait=${wait}` : path)

export const endpoints = {
  integrate: '/api/director/workflow/integrate',
  feedback: '/api/director/feedback/submit',
  patterns: '/api/director/patterns',
  trends: (by) => `/api/director/trends?by=${encodeURIComponent(by)}&days=30`,
  sessions: '/api/director/sessions?limit=50',
  session: (id, { wait = 0 } = {}) => waiting(`/api/director/sessions/${encodeURIComponent(id)}`, wait),
  scene: (id, { wait = 0 } = {}) => waiting(`/api/director/scenes/${encodeURIComponent(id)}`, wait),
  events: (id) => `/api/director/scenes/${encodeURIComponent(id)}/events`,
  regenerate: (id, shot) => `/api/director/scenes/${encodeURIComponent(id)}/shots/${shot}/regenerate`,
  memorySearch: (q, limit = 10) => `/api/director/memory/search?q=${encodeURIComponent(q)}&limit=${limit}`,
  memorySimilar: (id, shot, { by = 'plan', limit = 10 } = {}) =>
    `/api/director/memory/similar/${encodeURIComponent(id)}/${shot}?by=${by}&limit=${limit}`,
}
