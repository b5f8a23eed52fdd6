// The public API as the staff pages call it: the token from the sign-in form (sessionStorage,
// never a URL), JSON both ways, and streams opened with short-lived stream tickets, resumed
// from the last id seen after any drop.

const TOKEN_KEY = "switchboard.staffToken";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

export async function api(method, path, body, token = session.token) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    referrerPolicy: "no-referrer",
  });
  const text = await response.text();
  const answer = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, answer?.detail ?? response.statusText);
  return answer;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * Follow a stream (`/v1/agents/{id}/stream` or `/v1/conversations/{id}/stream`): each event
 * of `types` goes to `onEvent(type, data, id)`. An EventSource sends no headers, so each
 * connection gets a fresh ticket; after a drop it reopens from the last id seen (a ticket
 * lasts a minute, so the browser's own retry could not). `stop()` ends it.
 */
export function follow(stream, { after = 0, types, onEvent, onState = () => {} }) {
  let last = after;
  let source = null;
  let stopped = false;
  let retry = null;

  async function open() {
    if (stopped) return;
    try {
      const { ticket } = await api("POST", "/v1/stream-tickets", { stream });
      if (stopped) return;
      source = new EventSource(`${stream}${query({ ticket, after_seq: last })}`);
    } catch (error) {
      onState("lost", error);
      if (error instanceof ApiError && [401, 403].includes(error.status)) return;
      retry = setTimeout(open, 2000);
      return;
    }
    source.onopen = () => onState("open");
    source.onerror = () => {
      source.close();
      onState("lost");
      retry = setTimeout(open, 1000);
    };
    for (const type of [...types, "stream.ended"]) {
      source.addEventListener(type, (event) => {
        if (event.lastEventId) last = Math.max(last, Number(event.lastEventId));
        const data = JSON.parse(event.data);
        if (type === "stream.ended") {
          stop();
          onState("ended", data);
          return;
        }
        onEvent(type, data, event.lastEventId);
      });
    }
  }

  function stop() {
    stopped = true;
    clearTimeout(retry);
    source?.close();
  }

  open();
  return { stop };
}
