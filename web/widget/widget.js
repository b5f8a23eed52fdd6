// The visitor's chat: one conversation, on the public API with the visitor token the app's
// backend handed over (by postMessage, never in a URL), kept in sessionStorage so a reload
// resumes. The transcript comes from the conversation's events; new ones arrive on its stream.

import { Api, ApiError, newClientMessageId } from "../shared/api.js";
import {
  AttachmentTickets,
  PICKER_ACCEPT,
  attachmentView,
  paperclipIcon,
  takeFiles,
  uploadFiles,
} from "../shared/attachments.js";
import { el, safeLink } from "../shared/dom.js";
import { formatClock, formatWhen, language, t } from "./texts.js";

const SESSION_KEY = "switchboard.widget.session";
const OUTBOX_KEY = "switchboard.widget.outbox";
// The API allows 30 typing signals a minute from a side: one every 4 seconds at most.
const TYPING_EVERY_MS = 4000;
const TYPING_SHOWN_MS = 5000;
const STREAMED = [
  "conversation.routed",
  "conversation.state_changed",
  "conversation.handed_off",
  "queue.position_changed",
  "conversation.assigned",
  "conversation.transferred",
  "conversation.requeued",
  "message.created",
  "message.read",
  "conversation.typing",
  "conversation.idle_warning",
  "conversation.closed",
  "rating.invited",
  "rating.submitted",
  "rating.expired",
  "left_message.created",
];

const $ = (id) => document.getElementById(id);

const view = {
  state: null, // queued | active | closed | bot
  agentName: null,
  position: null,
  wait: null,
  online: navigator.onLine,
  nextOpening: null,
  leftMessageOffered: false,
  leftMessageSent: false,
  rating: "none", // none | pending | rated | expired
  ratingText: null,
  agentReadSeq: 0,
  // The newest message's quick replies, when it is the bot's: {seq, replies}; shown while the
  // conversation is with the bot and nothing newer was said.
  quickReplies: null,
};

let api = null;
let tickets = null; // for the attachments' <img> and <video>: api's tickets
let conversationId = null;
let stream = null;
let typingTimer = null;
let lastTypingSent = 0;
let typingLater = null; // a typing signal due once the interval has passed
let readSent = 0;
let newestAgentSeq = 0;
let panelShown = null;
// In an embed's iframe the host says whether its panel is open (closed: nothing is read, and
// the agent's new messages are counted for its button); a full page is always shown.
let shownByHost = window.parent === window;
let unread = 0;
let replaying = false;
const outbox = []; // {clientMessageId, type, content, attachment, state, item}
let sending = false;

// --- the page's frame -----------------------------------------------------------------------

function translatePage() {
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  document.title = t.title;
  $("title").textContent = t.title;
  $("transcript-title").textContent = t.transcript;
}

function showStatus() {
  let text = t.connecting;
  if (view.state === "queued") {
    const place = view.position ? t.queued(view.position) : t.queuedNoPosition;
    const wait =
      view.wait === null || view.wait === undefined
        ? ""
        : view.wait < 30
          ? t.waitSoon
          : t.wait(Math.round(view.wait / 60));
    text = `${place} ${wait}`.trim();
  } else if (view.state === "bot") {
    text = t.withBot;
  } else if (view.state === "active" && view.agentName) {
    text = t.chattingWith(view.agentName);
  } else if (view.state === "closed") {
    text = t.closed;
  }
  $("status").textContent = text;
  const notice = $("notice");
  notice.hidden = view.online;
  notice.textContent = view.online ? "" : t.offline;
  showPanel();
  showQuickReplies();
}

// --- the transcript -------------------------------------------------------------------------

/** Put an item where its seq belongs: after every shown seq below it, before pending ones. */
function place(item) {
  const list = $("transcript");
  const seq = Number(item.dataset.seq);
  for (const other of list.children) {
    if (other === item) continue;
    const otherSeq = other.dataset.seq ? Number(other.dataset.seq) : Infinity;
    if (otherSeq > seq) {
      list.insertBefore(item, other);
      return;
    }
  }
  list.append(item);
  scrollToEnd();
}

function scrollToEnd() {
  const scroller = $("transcript").parentElement;
  scroller.scrollTop = scroller.scrollHeight;
}

function seqShown(seq) {
  return $("transcript").querySelector(`[data-seq="${seq}"]`) !== null;
}

/** The attachment's words in the widget's language (web/shared/attachments.js). */
const attachmentWords = {
  image: t.image,
  video: t.video,
  openImage: t.openImage,
  closeViewer: t.closeViewer,
  file: t.fileLink,
  uploading: t.uploading,
  refused: t.attachmentRefused,
  uploadFailed: t.uploadFailed,
};

function messageBody(type, content, attachment) {
  const shown = attachment && attachmentView(attachment, { tickets, words: attachmentWords });
  if (shown) {
    return el("div", { class: "attachment" }, shown, content ? el("p", { class: "text" }, content) : null);
  }
  if (type === "image" || type === "video") {
    const link = safeLink(content, `${type === "image" ? t.image : t.video}: ${content}`);
    return el("p", { class: "text" }, link ?? content);
  }
  return el("p", { class: "text" }, content);
}

function messageItem({ own, bot = false, type, content, attachment, at, name }) {
  const item = el(
    "li",
    { class: own ? "message own" : bot ? "message theirs bot" : "message theirs" },
    bot
      ? el("p", { class: "sender" }, t.title, " ", el("span", { class: "bot-tag" }, t.bot), el("span", { class: "visually-hidden" }, ": "))
      : el("span", { class: "visually-hidden" }, `${own ? t.you : name || t.agent}: `),
    messageBody(type, content, attachment),
    el(
      "p",
      { class: "meta" },
      el("time", {}, at ? formatClock(at) : ""),
      own ? el("span", { class: "tick" }) : null,
    ),
  );
  return item;
}

function setTick(item, state) {
  const tick = item.querySelector(".tick");
  if (!tick) return;
  item.dataset.delivery = state;
  const label = { pending: t.sending, retrying: t.retrying, failed: t.failed, sent: t.sent, read: t.read }[
    state
  ];
  tick.textContent = { pending: "…", retrying: "↻", failed: "!", sent: "✓", read: "✓✓" }[state];
  tick.setAttribute("title", label);
  tick.setAttribute("aria-label", label);
}

function markRead() {
  for (const item of $("transcript").querySelectorAll(".message.own[data-seq]")) {
    if (Number(item.dataset.seq) <= view.agentReadSeq) setTick(item, "read");
  }
}

function systemLine(seq, text, kind = "") {
  if (!text) return;
  const item = el("li", { class: `system ${kind}`.trim(), "data-seq": seq }, el("p", {}, text));
  place(item);
}

function shownMessage(seq, data, at) {
  const own = data.sender_role === "visitor";
  const pending = own && outbox.find((entry) => entry.clientMessageId === data.client_message_id);
  if (pending) {
    confirm(pending, seq);
    return;
  }
  const bot = data.sender_role === "bot";
  const item = messageItem({
    own,
    bot,
    type: data.message_type,
    content: data.content,
    attachment: data.attachment,
    at,
    name: view.agentName,
  });
  item.dataset.seq = seq;
  place(item);
  if (!view.quickReplies || seq > view.quickReplies.seq) {
    const replies = bot && Array.isArray(data.quick_replies) ? data.quick_replies.filter((text) => typeof text === "string") : [];
    view.quickReplies = replies.length ? { seq, replies } : null;
  }
  if (own) setTick(item, seq <= view.agentReadSeq ? "read" : "sent");
  else {
    newestAgentSeq = Math.max(newestAgentSeq, seq);
    if (!replaying && !seen()) reportUnread(unread + 1);
  }
}

/** The newest bot message's quick replies as buttons under it, while the conversation is with
 * the bot; a tap sends the button's text as the visitor's message. */
function showQuickReplies() {
  const offered = view.state === "bot" ? view.quickReplies : null;
  const current = $("transcript").querySelector(".quick-replies");
  if (current && Number(current.dataset.for) === offered?.seq) return;
  const hadFocus = Boolean(current?.contains(document.activeElement));
  current?.remove();
  if (!offered) return;
  const message = $("transcript").querySelector(`[data-seq="${offered.seq}"]`);
  if (!message) return;
  const buttons = offered.replies.map((text) =>
    el("button", { type: "button", class: "quick-reply", "aria-label": t.quickReply(text), on: { click: () => sendQuickReply(text) } }, text),
  );
  message.append(el("div", { class: "quick-replies", role: "group", "aria-label": t.quickReplies, "data-for": offered.seq }, ...buttons));
  if (hadFocus) buttons[0].focus();
  scrollToEnd();
}

function sendQuickReply(text) {
  const focused = $("transcript").querySelector(".quick-replies")?.contains(document.activeElement);
  queueMessage(text);
  if (focused) $("message")?.focus(); // the buttons are gone: the keyboard goes on in the composer
}

// --- events ---------------------------------------------------------------------------------

function onEvent(type, event) {
  const data = event.data ?? {};
  const seq = event.seq;
  if (type === "conversation.typing") {
    // Live only: the signal itself, not an event of the log.
    if (event.by_role === "agent") showTyping();
    return;
  }
  if (seq !== undefined && seqShown(seq)) return;
  switch (type) {
    case "conversation.routed":
      if (data.open === false && data.next_opening) view.nextOpening = data.next_opening;
      break;
    case "conversation.state_changed":
      view.state = data.state;
      if (data.state === "queued") view.agentName = null;
      break;
    case "queue.position_changed":
      view.position = data.position;
      view.wait = data.estimated_wait;
      break;
    case "conversation.assigned":
      view.agentName = data.agent_name ?? view.agentName;
      view.state = "active";
      if (view.agentName) systemLine(seq, t.joined(view.agentName));
      break;
    case "conversation.transferred":
    case "conversation.requeued":
      systemLine(seq, data.text);
      break;
    case "conversation.handed_off":
      // To a person (转人工); out of hours its text is null and the close says the rest.
      view.quickReplies = null;
      systemLine(seq, data.text, "handoff");
      break;
    case "message.created":
      hideTyping();
      shownMessage(seq, data, event.at);
      break;
    case "message.read":
      if (data.by_role === "agent") {
        view.agentReadSeq = Math.max(view.agentReadSeq, data.seq);
        markRead();
      }
      break;
    case "conversation.idle_warning":
      systemLine(seq, data.text, "warning");
      break;
    case "conversation.closed":
      hideTyping();
      view.state = "closed";
      view.leftMessageOffered = Boolean(data.left_message);
      if (data.next_opening) view.nextOpening = data.next_opening;
      systemLine(seq, data.text, "closing");
      break;
    case "rating.invited":
      view.rating = view.rating === "rated" ? "rated" : "pending";
      view.ratingText = data.text;
      break;
    case "rating.submitted":
      view.rating = "rated";
      break;
    case "rating.expired":
      if (view.rating !== "rated") view.rating = "expired";
      break;
    case "left_message.created":
      view.leftMessageSent = true;
      break;
  }
  showStatus();
  sendReadMark();
}

function showTyping() {
  $("typing").textContent = t.typing(view.agentName || t.agent);
  clearTimeout(typingTimer);
  typingTimer = setTimeout(hideTyping, TYPING_SHOWN_MS);
}

function hideTyping() {
  clearTimeout(typingTimer);
  $("typing").textContent = "";
}

/** Whether the visitor can see the chat: its page is in front, and (embedded) its panel open. */
function seen() {
  return document.visibilityState === "visible" && shownByHost;
}

function reportUnread(count) {
  unread = count;
  if (window.parent !== window) window.parent.postMessage({ type: "switchboard:unread", count }, "*");
}

/** Tell the agent what the visitor has seen: the newest agent message, while it shows. */
async function sendReadMark() {
  if (!seen() || newestAgentSeq <= readSent || !api) return;
  const seq = newestAgentSeq;
  readSent = seq;
  try {
    await api.post(`/v1/conversations/${conversationId}/read`, { seq });
  } catch {
    readSent = Math.min(readSent, seq - 1); // tried again with the next event or visibility
  }
}

// --- sending --------------------------------------------------------------------------------

function saveOutbox() {
  const kept = outbox
    .filter((entry) => entry.state !== "failed")
    .map(({ clientMessageId, type, content, attachment }) => ({ clientMessageId, type, content, attachment }));
  sessionStorage.setItem(OUTBOX_KEY, JSON.stringify(kept));
}

function queueMessage(content, clientMessageId = newClientMessageId(), type = "text", attachment = undefined) {
  const item = messageItem({ own: true, type, content, attachment, at: new Date().toISOString() });
  const entry = { clientMessageId, type, content, attachment, state: "pending", item };
  view.quickReplies = null; // answered: the bot's buttons were for before
  setTick(item, "pending");
  $("transcript").append(item);
  outbox.push(entry);
  saveOutbox();
  showQuickReplies();
  scrollToEnd();
  flush();
}

function confirm(entry, seq) {
  if (!outbox.includes(entry)) return;
  outbox.splice(outbox.indexOf(entry), 1);
  saveOutbox();
  entry.item.dataset.seq = seq;
  place(entry.item);
  setTick(entry.item, seq <= view.agentReadSeq ? "read" : "sent");
}

/** Send what waits, in order, one at a time; the same client_message_id on every try, so a
 * message the API stored before the answer was lost is stored once. */
async function flush() {
  if (sending || !api) return;
  sending = true;
  try {
    while (outbox.some((entry) => entry.state !== "failed")) {
      const entry = outbox.find((candidate) => candidate.state !== "failed");
      try {
        const { body } = await api.post(`/v1/conversations/${conversationId}/messages`, {
          client_message_id: entry.clientMessageId,
          type: entry.type,
          ...(entry.attachment ? { attachment_id: entry.attachment.attachment_id } : {}),
          ...(entry.content || !entry.attachment ? { content: entry.content } : {}),
        });
        confirm(entry, body.seq); // unless the stream showed it first
      } catch (error) {
        if (!(error instanceof ApiError) || !error.retriable) {
          entry.state = "failed";
          setTick(entry.item, "failed");
          saveOutbox();
          continue;
        }
        entry.state = "retrying";
        setTick(entry.item, "retrying");
        if (!navigator.onLine) return; // tried again when the browser is back online
        await new Promise((resolve) => setTimeout(resolve, Math.max((error.retryAfter || 0) * 1000, 2000)));
      }
    }
  } finally {
    sending = false;
  }
}

function sendTyping() {
  if (view.state !== "active" || !document.getElementById("message")?.value.trim()) return;
  const wait = lastTypingSent + TYPING_EVERY_MS - Date.now();
  if (wait > 0) {
    // Typed again within the interval: say so when it has passed, if the text is still there.
    typingLater ??= setTimeout(() => {
      typingLater = null;
      sendTyping();
    }, wait);
    return;
  }
  lastTypingSent = Date.now();
  api.post(`/v1/conversations/${conversationId}/typing`).catch(() => {});
}

// --- the panel under the transcript: composer, rating, left message -------------------------

function showPanel() {
  const which =
    view.state === null
      ? "none"
      : view.state !== "closed"
        ? "composer"
        : view.rating === "pending"
          ? "rating"
          : view.rating === "rated"
            ? "rated"
            : view.leftMessageOffered && !view.leftMessageSent
              ? "leave"
              : view.leftMessageSent
                ? "left"
                : view.rating === "expired"
                  ? "expired"
                  : "none";
  if (which === panelShown) return;
  panelShown = which;
  const panel = $("panel");
  const builders = { composer, rating: ratingForm, rated, leave: leaveForm, left, expired, none: () => [] };
  panel.replaceChildren(...[builders[which]()].flat());
  scrollToEnd(); // the panel took its room from the transcript: keep its end in sight
}

function composer() {
  const input = el("textarea", {
    id: "message",
    rows: 2,
    maxlength: 4000,
    placeholder: t.placeholder,
    autocomplete: "off",
    on: {
      input: () => sendTyping(),
      keydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          form.requestSubmit();
        }
      },
    },
  });
  const picker = el("input", { type: "file", id: "attach-input", accept: PICKER_ACCEPT, multiple: true, hidden: true });
  const form = el(
    "form",
    {
      class: "composer",
      on: {
        submit: (event) => {
          event.preventDefault();
          const content = input.value;
          if (!content.trim()) return;
          input.value = "";
          queueMessage(content);
        },
      },
    },
    picker,
    el(
      "button",
      { type: "button", id: "attach", class: "attach", title: t.attach, "aria-label": t.attach, on: { click: () => picker.click() } },
      paperclipIcon(),
    ),
    el("label", { for: "message", class: "visually-hidden" }, t.messageLabel),
    input,
    el("button", { type: "submit", class: "primary" }, t.send),
  );
  takeFiles({ picker, composer: input, onFiles: attach });
  return [
    el("ul", { id: "uploads", class: "uploads" }),
    el("p", { id: "attach-error", class: "error", role: "alert" }),
    form,
  ];
}

/** Upload what the visitor chose, pasted or dropped, then send each as its message (through
 * the outbox, as a text is); a refused file is said in the error line above the composer. */
function attach(files) {
  const error = $("attach-error");
  if (error) error.textContent = "";
  uploadFiles(api, conversationId, files, {
    list: $("uploads") ?? el("ul"),
    words: attachmentWords,
    taken: (attachment) => queueMessage("", undefined, attachment.kind, attachment),
    refused: (sentence) => {
      const line = $("attach-error");
      if (line) line.textContent = sentence;
    },
  });
}

/**
 * A form of the panel: its title, its fields, and `body()`, what it posts to `path` (or a
 * sentence saying what is missing); `done()` once the API has it.
 */
function panelForm({ className, title, fields, submit, path, body, done, conflict = done }) {
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    {
      class: className,
      on: {
        submit: async (event) => {
          event.preventDefault();
          const posted = body(new FormData(form));
          if (typeof posted === "string") {
            error.textContent = posted;
            return;
          }
          await submitOnce(form, error, `/v1/conversations/${conversationId}/${path}`, posted, done, conflict);
        },
      },
    },
    el("h2", {}, title),
    ...fields,
    error,
    el("button", { type: "submit", class: "primary" }, submit),
  );
  return form;
}

/** A form's text, trimmed, if any was written. */
const written = (fields, name) => String(fields.get(name) ?? "").trim();

function ratingForm() {
  const stars = el(
    "fieldset",
    { class: "stars" },
    el("legend", { class: "visually-hidden" }, t.yourRating),
    ...[1, 2, 3, 4, 5].map((score) =>
      el(
        "label",
        { class: "star" },
        el("input", { type: "radio", name: "score", value: score, required: score === 1 }),
        el("span", { "aria-hidden": "true" }, "★"),
        el("span", { class: "visually-hidden" }, t.stars(score)),
      ),
    ),
  );
  const resolved = el(
    "fieldset",
    { class: "resolved" },
    el("legend", {}, t.resolvedQuestion),
    el("label", {}, el("input", { type: "radio", name: "resolved", value: "yes" }), " ", t.yes),
    el("label", {}, el("input", { type: "radio", name: "resolved", value: "no" }), " ", t.no),
  );
  return panelForm({
    className: "rating",
    title: view.ratingText || t.rateTitle,
    fields: [
      stars,
      resolved,
      el("label", { for: "rating-comment" }, t.comment),
      el("textarea", { id: "rating-comment", name: "comment", rows: 2, maxlength: 2000 }),
    ],
    submit: t.submitRating,
    path: "rating",
    body: (fields) => {
      const score = Number(fields.get("score"));
      if (!score) return t.chooseStars;
      const answer = fields.get("resolved");
      const comment = written(fields, "comment");
      return { score, ...(answer ? { resolved: answer === "yes" } : {}), ...(comment ? { comment } : {}) };
    },
    done: () => {
      view.rating = "rated";
    },
    // Rated already, or the window is over: the conversation says which.
    conflict: async () => {
      const { body } = await api.get(`/v1/conversations/${conversationId}`).catch(() => ({ body: null }));
      view.rating = body?.rating?.status === "rated" ? "rated" : "expired";
    },
  });
}

function leaveForm() {
  return panelForm({
    className: "leave",
    title: t.leaveTitle,
    fields: [
      view.nextOpening ? el("p", { class: "opening" }, t.nextOpening(formatWhen(view.nextOpening))) : null,
      el("label", { for: "left-content" }, t.leaveMessage),
      el("textarea", { id: "left-content", name: "content", rows: 3, maxlength: 4000, required: true }),
      el("label", { for: "left-contact" }, t.contact),
      el("input", { id: "left-contact", name: "contact", type: "text", maxlength: 200, autocomplete: "email" }),
    ].filter(Boolean),
    submit: t.submitLeft,
    path: "left-message",
    body: (fields) => {
      const content = written(fields, "content");
      const contact = written(fields, "contact");
      return content ? { content, ...(contact ? { contact } : {}) } : t.leaveMessage;
    },
    done: () => {
      view.leftMessageSent = true;
    },
  });
}

/** Post a form's body; a 409 (taken already: a retry after a lost answer, or too late) is
 * `conflict`'s to settle. */
async function submitOnce(form, error, path, body, done, conflict) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  error.textContent = "";
  try {
    await api.post(path, body);
    done();
  } catch (failure) {
    if (failure.status === 409) await conflict();
    else error.textContent = t.tryAgain;
  } finally {
    button.disabled = false;
  }
  showStatus();
}

const rated = () => el("p", { class: "thanks", role: "status" }, t.thanksRating);
const left = () => el("p", { class: "thanks", role: "status" }, t.thanksLeft);
const expired = () => el("p", { class: "thanks" }, t.ratingExpired);

// --- the session ----------------------------------------------------------------------------

function storedSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

async function begin(session) {
  if (conversationId === session.conversationId && api?.token === session.visitorToken) return;
  if (conversationId && conversationId !== session.conversationId) {
    // Another conversation (the app started a new one): what waited was for the old one.
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    sessionStorage.removeItem(OUTBOX_KEY);
    location.reload();
    return;
  }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  conversationId = session.conversationId;
  api = new Api("", session.visitorToken);
  tickets = new AttachmentTickets(api);
  stream?.close();
  showStatus();
  let after = 0;
  try {
    after = await replay();
  } catch (error) {
    if (error.status === 401 || error.status === 403 || error.status === 404) return ended();
  }
  for (const entry of JSON.parse(sessionStorage.getItem(OUTBOX_KEY) || "[]")) {
    if (!outbox.some((waiting) => waiting.clientMessageId === entry.clientMessageId)) {
      queueMessage(entry.content, entry.clientMessageId, entry.type, entry.attachment);
    }
  }
  stream = api.follow(`/v1/conversations/${conversationId}/stream`, {
    afterSeq: after,
    types: STREAMED,
    onEvent,
    onStatus: (live) => {
      view.online = navigator.onLine;
      if (live) flush();
      showStatus();
    },
    onEnded: ended,
  });
  scrollToEnd();
}

/** The transcript so far, from the conversation's events: answers the newest seq read. */
async function replay() {
  let after = 0;
  replaying = true; // what was there before is no news for the host's button
  try {
    for (;;) {
      const { body } = await api.get(`/v1/conversations/${conversationId}/events?after_seq=${after}&limit=200`);
      for (const event of body.events) {
        onEvent(event.type, event);
        after = event.seq;
      }
      if (!body.has_more) return after;
    }
  } finally {
    replaying = false;
  }
}

function ended() {
  if (view.state === "closed") return; // the rating or left-message form stays
  $("status").textContent = t.ended;
}

function listen() {
  window.addEventListener("message", (event) => {
    const fromHost = (window.parent !== window && event.source === window.parent) || event.source === window.opener;
    const data = event.data;
    if (fromHost && data?.type === "switchboard:visibility") {
      shownByHost = Boolean(data.open);
      if (shownByHost) {
        reportUnread(0);
        sendReadMark();
      }
      return;
    }
    if (!fromHost || !data || data.type !== "switchboard:session") return;
    if (typeof data.conversationId !== "string" || typeof data.visitorToken !== "string") return;
    begin({ conversationId: data.conversationId, visitorToken: data.visitorToken });
  });
  window.addEventListener("online", () => {
    view.online = true;
    showStatus();
    stream?.reconnect();
    flush();
  });
  window.addEventListener("offline", () => {
    view.online = false;
    showStatus();
  });
  document.addEventListener("visibilitychange", sendReadMark);
}

function start() {
  translatePage();
  if (window.parent !== window) document.body.classList.add("embedded");
  listen();
  // A file dropped anywhere on the chat is sent, while the composer is there.
  takeFiles({ zone: document.querySelector(".widget"), onFiles: attach, accepting: () => panelShown === "composer" });
  const host = window.parent !== window ? window.parent : window.opener;
  // The host (the embed script, or the page that opened this one) answers with the session.
  host?.postMessage({ type: "switchboard:ready" }, "*");
  const session = storedSession();
  if (session) begin(session);
  else if (!host) $("status").textContent = t.noSession;
}

start();
