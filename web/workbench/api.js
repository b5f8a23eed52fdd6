// The staff pages' session and their calls to the API, on the pages' one client
// (web/shared/api.js): the token from the sign-in form, kept in sessionStorage (never a URL).

import { Api, ApiError, newClientMessageId, query } from "../shared/api.js";

export { ApiError, newClientMessageId, query };

const TOKEN_KEY = "switchboard.staffToken";

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

/** The pages' client as the signed-in member of staff (uploads, attachments' tickets). */
export function staffApi(token = session.token) {
  return new Api("", token);
}

/** The answer's body of `method path` (with a JSON `body`), as the signed-in member of staff. */
export async function api(method, path, body, token = session.token) {
  return (await staffApi(token).request(method, path, body)).body;
}

/**
 * Follow a stream as the signed-in member of staff (see Api.follow): `onState` hears "open",
 * "lost" and, when access has ended, "ended" with the reason. Answers an object whose `stop()`
 * ends it.
 */
export function follow(stream, { after = 0, types, onEvent, onState = () => {}, position }) {
  const followed = new Api("", session.token).follow(stream, {
    afterSeq: after,
    types,
    onEvent,
    position,
    onStatus: (live) => onState(live ? "open" : "lost"),
    onEnded: (reason) => onState("ended", reason),
  });
  return { stop: () => followed.close() };
}
