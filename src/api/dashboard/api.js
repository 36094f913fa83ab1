// Calls to the admin API, as the CLI makes them: JSON, the client header
// on every call, `content-type: application/json` on every change, and
// the token this tab was given (kept in sessionStorage: gone when the tab
// closes, never shared with another tab).

const TOKEN_KEY = 'switchyard-token';

/** The admin API wants a token (none was given, or it was wrong). */
export class Unauthorized extends Error {}

/** The admin API answered with an error; `message` is its own. */
export class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** serve did not answer at all. */
export class Unreachable extends Error {}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

async function call(method, path, body) {
  const headers = {
    accept: 'application/json',
    'x-switchyard-client': 'dashboard',
    'x-switchyard-actor': 'dashboard',
  };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const given = token.get();
  if (given) headers.authorization = `Bearer ${given}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (error) {
    throw new Unreachable(`serve does not answer (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const message = (data && typeof data.error === 'string' && data.error)
    || `${response.status} ${response.statusText}`;
  if (response.status === 401) throw new Unauthorized(message);
  if (!response.ok) throw new Refused(response.status, message);
  return data;
}

/** GET a path of the admin API. */
export const get = (path) => call('GET', path);

/** GET, with null for 404 (a rollout or upgrade that never was). */
export async function getOrNone(path) {
  try {
    return await get(path);
  } catch (error) {
    if (error instanceof Refused && error.status === 404) return null;
    throw error;
  }
}

/** A change: POST or PUT with a JSON body, or DELETE without one. */
export const change = (method, path, body) => call(method, path, body);
