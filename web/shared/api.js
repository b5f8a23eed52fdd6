// The API as a browser page talks to it: JSON requests with a bearer token (never in a URL),
// and live streams opened with stream tickets, resumed after the last event seen.

/** A request the API answered with an error (status and detail), or that never arrived (status 0). */
export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(describe(status, detail));
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }

  /** Worth sending again as it is: the network, a 503, a 429 (after Retry-After). */
  get retriable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** An error's detail in words: the API's own, the first of a validation's, or the status. */
function describe(status, detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && typeof detail[0]?.msg === "string") return detail[0].msg;
  return `HTTP ${status}`;
}

/** A query string from `params`, leaving out those without a value ("" when none is left). */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export class Api {
  /** `base`: the API's origin ("" for this page's own); `token`: the caller's bearer token. */
  constructor(base, token) {
    this.base = base;
    this.token = token;
  }

  async request(method, path, body) {
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network");
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const wait = Number(response.headers.get("Retry-After")) || 0;
      throw new ApiError(response.status, answer?.detail, wait);
    }
    return { status: response.status, body: answer };
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body ?? {});
  }

  /**
   * Upload `file` as the multipart field `file` to `path`; `onProgress(fraction)` hears how
   * much has gone (XMLHttpRequest: fetch reports no upload progress). Answers like request();
   * the file's own name never leaves the page (the API decides what it is from its bytes).
   */
  upload(path, file, onProgress = () => {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", this.base + path);
      xhr.setRequestHeader("Authorization", `Bearer ${this.token}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        const answer = xhr.response;
        if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body: answer });
        else reject(new ApiError(xhr.status, answer?.detail, Number(xhr.getResponseHeader("Retry-After")) || 0));
      });
      xhr.addEventListener("error", () => reject(new ApiError(0, "network")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "network")));
      const form = new FormData();
      form.append("file", file, "upload");
      xhr.send(form);
    });
  }

  /**
   * Follow a stream (`/v1/conversations/{id}/stream`, or an agent's feed with `position`
   * answering an event's `agent_seq`): each stored event is handed to `onEvent(type, data)`
   * once, in order, from after `afterSeq`; live-only events (typing, without a position) too.
   * A dropped connection, an expired ticket or a stream the server ended is opened again with
   * a new ticket after the last position seen: nothing missed, nothing twice. `onStatus(live)`
   * says whether the stream is connected; `onEnded(reason)` is called when access has ended
   * (the stream is then not reopened). Answers an object whose `close()` stops it and whose
   * `reconnect()` opens it again at once (when the network is back).
   */
  follow(
    path,
    { afterSeq = 0, types, onEvent, onStatus = () => {}, onEnded = () => {}, position = (data) => data.seq },
  ) {
    let last = afterSeq;
    let source = null;
    let stopped = false;
    let timer = null;
    let delay = 500;
    let generation = 0; // the newest open(): an older one still waiting for its ticket gives up

    const handle = (event) => {
      const data = JSON.parse(event.data);
      // A stored event has its position (lastEventId sticks to the last one: useless here); a
      // live-only one (typing) has none and is never replayed.
      const at = position(data);
      if (typeof at === "number") {
        if (at <= last) return; // a replay of what was shown already
        last = at;
      }
      delay = 500;
      onEvent(event.type, data);
    };

    const open = async () => {
      timer = null;
      if (stopped) return;
      const mine = ++generation;
      source?.close();
      let ticket;
      try {
        ({ body: { ticket } } = await this.post("/v1/stream-tickets", { stream: path }));
      } catch (error) {
        if (error.status === 401 || error.status === 403 || error.status === 404) {
          stopped = true;
          onEnded(error.status === 401 ? "token_expired" : "access_lost");
          return;
        }
        if (mine === generation) retry(error.retryAfter);
        return;
      }
      if (stopped || mine !== generation) return;
      const query = `ticket=${encodeURIComponent(ticket)}&after_seq=${last}`;
      source = new EventSource(`${this.base}${path}?${query}`);
      source.onopen = () => onStatus(true);
      // One handler per type: EventSource dispatches by the `event:` name.
      for (const type of types) source.addEventListener(type, handle);
      source.addEventListener("stream.ended", (event) => {
        stopped = true;
        source.close();
        onStatus(false);
        onEnded(JSON.parse(event.data).reason);
      });
      const opened = source;
      opened.onerror = () => {
        if (opened !== source) return;
        // Closed by the server (its age, a restart) or by the network: open again ourselves,
        // with a fresh ticket and after the last seq seen (the ticket may have expired).
        opened.close();
        onStatus(false);
        retry();
      };
    };

    const retry = (seconds = 0) => {
      if (stopped || timer) return;
      timer = setTimeout(open, Math.max(seconds * 1000, delay));
      delay = Math.min(delay * 2, 10000);
    };

    open();
    return {
      close() {
        stopped = true;
        clearTimeout(timer);
        source?.close();
      },
      reconnect() {
        if (stopped) return;
        clearTimeout(timer);
        timer = null;
        source?.close();
        delay = 500;
        open();
      },
      get lastSeq() {
        return last;
      },
    };
  }
}

/** A fresh id for a message, kept with it until the API has it (crypto.randomUUID needs https). */
export function newClientMessageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "w-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
