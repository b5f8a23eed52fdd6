// The agent workbench: sign in with a staff token, the conversations (an agent's own, live on
// their feed; a supervisor's groups'), the chat with its composer, and the customer beside it.
// Text from people is always inserted as text (textContent), never as HTML.

import {
  AttachmentTickets,
  PICKER_ACCEPT,
  attachmentView,
  paperclipIcon,
  takeFiles,
  uploadFiles,
} from "../shared/attachments.js";
import { api, ApiError, follow, newClientMessageId, query, session, staffApi } from "./api.js";
import { duration, t, translatePage } from "./i18n.js";
import { refusal, signInForm } from "./signin.js";
import { TicketDesk } from "./tickets.js";

const $ = (id) => document.getElementById(id);

// Every event type a stream shows the workbench (typing is live only, without an id).
const STREAM_TYPES = [
  "conversation.routed",
  "conversation.state_changed",
  "conversation.handed_off",
  "queue.position_changed",
  "conversation.overflowed",
  "conversation.assigned",
  "conversation.transferred",
  "conversation.requeued",
  "message.created",
  "message.read",
  "conversation.idle_warning",
  "conversation.closed",
  "rating.invited",
  "rating.submitted",
  "rating.expired",
  "note.created",
  "conversation.attributes_changed",
  "conversation.typing",
];
const TYPING_SHOWN_MS = 5000;
const TYPING_SENT_EVERY_MS = 3000;
const LIST_REFRESH_MS = 3000;
const FIGURES_REFRESH_MS = 5000;

const state = {
  me: null,
  conversations: new Map(), // id → {view, events: Map(seq → event), typingUntil}
  loading: new Map(), // id → promise of the conversation's first load
  openId: null,
  readOnly: null, // {id, events} of an earlier conversation shown read only
  feed: null,
  openStream: null, // a supervisor's stream of the open conversation
  timers: [],
  typingSentAt: 0,
  typingLater: null, // a typing signal due once the interval has passed
  sending: Promise.resolve(), // the sends, one after the other
  pending: null, // {text, conversation, clientMessageId} of a send not yet through
  canned: { replies: [], active: 0, asked: 0 },
  tickets: null, // the attachments' tickets, for the signed-in member of staff
  attachmentViews: new Map(), // attachment id → its element (the transcript is redrawn often)
};

const desk = new TicketDesk({ me: () => state.me, failed: (error) => failed(error), banner: (...args) => banner(...args) });

const isAgent = () => state.me?.role === "agent";
const oversees = () => ["supervisor", "admin"].includes(state.me?.role);

function element(tag, { className, text, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  for (const [key, value] of Object.entries(attrs ?? {})) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function customerLabel(view) {
  const name = view.attributes && typeof view.attributes.name === "string" ? view.attributes.name : null;
  return name ? `${name} (${view.customer_id})` : view.customer_id;
}

// --- banners -----------------------------------------------------------------------------------

/** A banner saying `text`; `action` ({label, run}) adds a button beside its dismissal. */
function banner(text, { error = false, action = null } = {}) {
  const box = element("div", { className: error ? "banner error" : "banner" });
  const dismiss = element("button", { text: t("dismiss"), attrs: { type: "button" } });
  dismiss.addEventListener("click", () => box.remove());
  const buttons = element("span", { className: "banner-actions" });
  if (action) {
    const act = element("button", { text: action.label, attrs: { type: "button" } });
    act.addEventListener("click", () => {
      box.remove();
      action.run();
    });
    buttons.append(act);
  }
  buttons.append(dismiss);
  box.append(element("span", { text }), buttons);
  const banners = $("banners");
  banners.append(box);
  while (banners.children.length > 3) banners.firstElementChild.remove();
  if (!error && globalThis.Notification?.permission === "granted" && document.hidden) {
    new Notification(t("title"), { body: text });
  }
}

function failed(error) {
  banner(t("errorPrefix", { detail: error instanceof ApiError ? error.message : String(error) }), {
    error: true,
  });
}

// --- signing in and out ------------------------------------------------------------------------

let signInView = null;

function showSignIn(message = "") {
  $("bench").hidden = true;
  $("ticket-desk").hidden = true;
  $("view-tabs").hidden = true;
  $("who").hidden = true;
  signInView.show(message);
}

function signOut() {
  session.signOut();
  stopAll();
  state.me = null;
  state.tickets = null;
  state.attachmentViews.clear();
  state.conversations.clear();
  state.openId = null;
  desk.reset();
  $("conversation-list").replaceChildren();
  $("panel-body").replaceChildren();
  $("queue-figures").replaceChildren();
  $("banners").replaceChildren();
  showChat(null);
  showSignIn();
}

function stopAll() {
  state.feed?.stop();
  state.openStream?.stop();
  state.feed = state.openStream = null;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

async function start() {
  try {
    state.me = await api("GET", "/v1/me");
  } catch (error) {
    session.signOut();
    showSignIn(refusal(error));
    return;
  }
  if (globalThis.Notification?.permission === "default") Notification.requestPermission();
  const me = state.me;
  state.tickets = new AttachmentTickets(staffApi());
  signInView.hide();
  desk.start();
  showView("conversations");
  $("view-tabs").hidden = false;
  $("who").hidden = me.role !== "admin";
  $("who-name").textContent = `${me.name} (${me.id})`;
  $("list-heading").textContent = isAgent() ? t("myConversations") : t("groupConversations");
  $("wallboard-link").hidden = !oversees();
  $("presence").hidden = me.role === "admin";
  document.querySelector('label[for="presence"]').hidden = me.role === "admin";
  const groups = $("transfer-group");
  groups.replaceChildren(element("option", { text: "—", attrs: { value: "" } }));
  for (const group of me.skill_groups) groups.append(element("option", { text: group, attrs: { value: group } }));
  $("note-mode").parentElement.hidden = !isAgent();
  if (me.role !== "admin") {
    const agent = await api("GET", `/v1/agents/${encodeURIComponent(me.id)}`);
    $("presence").value = agent.status;
    $("who").hidden = false; // the status shown is the agent's before it can be changed
    if (isAgent()) await startAgent(agent);
  }
  if (oversees()) {
    await refreshGroupList();
    state.timers.push(setInterval(() => refreshGroupList().catch(() => {}), LIST_REFRESH_MS));
  }
  // Everyone's own groups (an admin's: all): the queue figures and the messages left for them.
  await Promise.all([refreshFigures(), refreshLeftMessages()]);
  state.timers.push(
    setInterval(() => Promise.all([refreshFigures(), refreshLeftMessages()]).catch(() => {}), FIGURES_REFRESH_MS),
  );
  state.timers.push(setInterval(renderList, 5000)); // how long visitors have waited
  showChat(state.openId);
}

async function setPresence() {
  try {
    await api("PUT", `/v1/agents/${encodeURIComponent(state.me.id)}/status`, { status: $("presence").value });
    await refreshFigures(); // the agents online change with it
  } catch (error) {
    failed(error);
  }
}

// --- the two views: conversations and tickets -------------------------------------------------

function showView(name) {
  const tickets = name === "tickets";
  $("bench").hidden = tickets;
  $("ticket-desk").hidden = !tickets;
  for (const [tab, current] of [["tab-conversations", !tickets], ["tab-tickets", tickets]]) {
    if (current) $(tab).setAttribute("aria-current", "page");
    else $(tab).removeAttribute("aria-current");
  }
  if (tickets) desk.shown();
  else desk.hidden();
}

/** The Tickets view, showing ticket `id`. */
function openTicket(id) {
  showView("tickets");
  desk.open(id).catch(failed);
}

/** A new ticket: said in a banner that opens it. */
function ticketMade(ticket) {
  banner(t("ticketCreated", { id: ticket.id, subject: ticket.subject }), {
    action: { label: t("openTicket"), run: () => openTicket(ticket.id) },
  });
}

function toggleTicketForm() {
  const slot = $("ticket-form-slot");
  if (slot.firstChild) {
    slot.replaceChildren();
    return;
  }
  const id = state.openId;
  slot.append(
    desk.form({
      idPrefix: "new-ticket",
      path: `/v1/conversations/${encodeURIComponent(id)}/ticket`,
      made: (ticket) => {
        slot.replaceChildren();
        ticketMade(ticket);
        if (state.openId === id) renderCustomerTickets(id);
        $("ticket-button").focus();
      },
      cancelled: () => {
        slot.replaceChildren();
        $("ticket-button").focus();
      },
    }),
  );
}

function renderCustomerTickets(id) {
  const record = state.conversations.get(id);
  const container = document.getElementById("customer-tickets");
  if (!record || !container) return;
  desk.customerTickets(container, record.view.customer_id, id, openTicket).catch(() => {
    container.replaceChildren(element("p", { className: "hint", text: t("noCustomerTickets") }));
  });
}

// --- conversations ----------------------------------------------------------------------------

async function startAgent(agent) {
  // The feed from where it stands now, and the list as it is now: nothing falls between.
  const views = await api("GET", `/v1/agents/${encodeURIComponent(agent.id)}/conversations`);
  await Promise.all(views.map((view) => loadConversation(view.id, view)));
  renderList();
  state.feed = follow(`/v1/agents/${encodeURIComponent(agent.id)}/stream`, {
    after: agent.feed_seq,
    position: (data) => data.agent_seq,
    types: STREAM_TYPES,
    onEvent: (type, data) => feedEvent(type, data).catch(failed),
    onState: (kind) => {
      streamState(kind);
      if (kind === "ended") signOut(); // the token was replaced or the agent deactivated
    },
  });
}

function streamState(kind) {
  if (kind === "lost") $("typing").textContent = t("streamLost");
  if (kind !== "lost" && $("typing").textContent === t("streamLost")) $("typing").textContent = "";
}

async function loadEvents(id, after = 0) {
  const events = [];
  for (;;) {
    const page = await api("GET", `/v1/conversations/${encodeURIComponent(id)}/events${query({ after_seq: after, limit: 1000 })}`);
    events.push(...page.events);
    if (!page.has_more || page.events.length === 0) return events;
    after = page.events[page.events.length - 1].seq;
  }
}

function loadConversation(id, view) {
  if (!state.loading.has(id)) {
    const loading = (async () => {
      const record = { view: view ?? (await api("GET", `/v1/conversations/${encodeURIComponent(id)}`)), events: new Map(), typingUntil: 0 };
      state.conversations.set(id, record);
      for (const event of await loadEvents(id)) addEvent(id, event);
      return record;
    })();
    state.loading.set(id, loading);
    loading.catch(() => state.loading.delete(id));
  }
  return state.loading.get(id);
}

/** An event of the conversation (from a page, a stream, or our own answer): stored once by seq,
 * and what it changes in the conversation's view. */
function addEvent(id, event) {
  const record = state.conversations.get(id);
  if (!record || record.events.has(event.seq)) return;
  record.events.set(event.seq, event);
  const view = record.view;
  const data = event.data ?? {};
  view.last_seq = Math.max(view.last_seq ?? 0, event.seq);
  if (event.type === "message.read" && data.by_role === "visitor") {
    view.visitor_read_seq = Math.max(view.visitor_read_seq ?? 0, data.seq);
  }
  if (event.type === "message.read" && data.by_role === "agent") {
    view.agent_read_seq = Math.max(view.agent_read_seq ?? 0, data.seq);
  }
  if (event.type === "conversation.state_changed") view.state = data.state;
  if (event.type === "conversation.closed") view.state = "closed";
  if (event.type === "message.created" && data.sender_role === "visitor") record.typingUntil = 0;
}

async function feedEvent(type, data) {
  const id = data.conversation_id;
  if (type === "conversation.typing") {
    typingSeen(id, data);
    return;
  }
  const known = state.conversations.has(id);
  if (type === "conversation.transferred" && data.data?.from_agent_id === state.me.id && data.data?.to_agent_id !== state.me.id) {
    // Handed on: the stream shows nothing more of it.
    state.conversations.delete(id);
    state.loading.delete(id);
    banner(t("transferredOut"));
    if (state.openId === id) showChat(null);
    renderList();
    return;
  }
  if (!known) {
    // Only an assignment brings a conversation in: the rest of an unknown one's events are
    // of one it held before (a rating that expired after the close, say).
    if (type !== "conversation.assigned" || data.data?.agent_id !== state.me.id) return;
    const record = await loadConversation(id);
    const text = data.data?.transferred ? "transferredIn" : "newConversation";
    banner(t(text, { customer: customerLabel(record.view) }));
  } else {
    await state.loading.get(id);
    addEvent(id, data);
    if (type === "conversation.attributes_changed") {
      state.conversations.get(id).view = await api("GET", `/v1/conversations/${encodeURIComponent(id)}`);
      if (state.openId === id) renderPanel();
    }
  }
  renderList();
  if (state.openId === id && !state.readOnly) renderTranscript();
}

function typingSeen(id, data) {
  const record = state.conversations.get(id);
  if (!record || data.by_role !== "visitor") return;
  record.typingUntil = Date.now() + TYPING_SHOWN_MS;
  renderTyping();
  setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
}

function renderTyping() {
  const record = state.conversations.get(state.openId);
  if ($("typing").textContent === t("streamLost")) return;
  $("typing").textContent = record && !state.readOnly && record.typingUntil > Date.now() ? t("typing") : "";
}

async function refreshGroupList() {
  const views = await api("GET", "/v1/conversations");
  const listed = new Set(views.map((view) => view.id));
  for (const view of views) {
    const record = state.conversations.get(view.id);
    if (record) record.view = { ...record.view, ...view };
    else state.conversations.set(view.id, { view, events: new Map(), typingUntil: 0 });
  }
  for (const id of [...state.conversations.keys()]) {
    if (!listed.has(id) && id !== state.openId) {
      state.conversations.delete(id);
      state.loading.delete(id);
    }
  }
  renderList();
  if (state.openId && listed.has(state.openId)) renderChatHead();
}

function unreadOf(record) {
  let count = 0;
  for (const event of record.events.values()) {
    if (event.type === "message.created" && event.data.sender_role === "visitor" && event.seq > (record.view.agent_read_seq ?? 0)) count += 1;
  }
  return count;
}

/** Since when the visitor has waited for a reply: their first message after staff's last. */
function waitingSince(record) {
  let since = null;
  for (const event of [...record.events.values()].sort((a, b) => a.seq - b.seq)) {
    if (event.type !== "message.created") continue;
    if (event.data.sender_role === "visitor") since ??= event.at;
    else since = null;
  }
  return since;
}

function renderList() {
  const list = $("conversation-list");
  const records = [...state.conversations.values()];
  const sections = oversees()
    ? [["queued", records.filter((r) => r.view.state === "queued")], ["active", records.filter((r) => r.view.state !== "queued")]]
    : [["active", records]];
  const nodes = [];
  for (const [name, members] of sections) {
    if (oversees()) nodes.push(element("h3", { text: t(name) }));
    if (members.length === 0) {
      nodes.push(element("p", { className: "hint", text: t("none") }));
      continue;
    }
    const ul = element("ul", { className: "conversations" });
    for (const record of members) ul.append(listItem(record));
    nodes.push(ul);
  }
  // Re-rendered every few seconds: keyboard focus stays on the conversation it was on.
  const focused = document.activeElement?.closest?.("#conversation-list button")?.dataset.id;
  list.replaceChildren(...nodes);
  if (focused) list.querySelector(`button[data-id="${CSS.escape(focused)}"]`)?.focus();
}

function listItem(record) {
  const view = record.view;
  const button = element("button", { className: "conversation", attrs: { type: "button", "data-id": view.id } });
  if (view.id === state.openId) button.setAttribute("aria-current", "true");
  button.append(element("span", { className: "name", text: customerLabel(view) }));
  const details = [view.skill_group];
  if (view.state === "queued" && view.queue_position) details.push(`#${view.queue_position}`);
  if (oversees() && view.agent_name && view.state !== "queued") details.push(view.agent_name);
  if (view.state === "closed") details.push(t("closed"));
  button.append(element("span", { className: "details", text: details.filter(Boolean).join(" · ") }));
  const unread = isAgent() && view.state === "active" ? unreadOf(record) : 0;
  if (unread) button.append(element("span", { className: "unread", text: t("unread", { count: unread }) }));
  const since = view.state === "active" ? waitingSince(record) : view.state === "queued" ? view.created_at : null;
  if (since) {
    const seconds = (Date.now() - Date.parse(since)) / 1000;
    button.append(element("span", { className: "waiting", text: t("waiting", { duration: duration(seconds) }) }));
  }
  button.addEventListener("click", () => openConversation(view.id).catch(failed));
  return element("li", {}, button);
}

async function openConversation(id) {
  state.readOnly = null;
  state.openId = id;
  state.openStream?.stop();
  state.openStream = null;
  const record = await loadConversation(id, state.conversations.get(id)?.view);
  if (oversees()) {
    // A supervisor follows the conversation itself (their feed holds only what they were assigned).
    const last = Math.max(0, ...record.events.keys());
    state.openStream = follow(`/v1/conversations/${encodeURIComponent(id)}/stream`, {
      after: last,
      types: STREAM_TYPES,
      onEvent: (type, data) => {
        if (type === "conversation.typing") return typingSeen(id, data);
        addEvent(id, data);
        if (state.openId === id && !state.readOnly) renderTranscript();
      },
      onState: streamState,
    });
  }
  showChat(id);
  renderList();
  renderPanel();
}

// --- the chat ---------------------------------------------------------------------------------

function showChat(id) {
  if (id !== state.openId) {
    $("attach-error").textContent = ""; // it was about another chat
    $("ticket-form-slot").replaceChildren();
  }
  state.openId = id;
  $("chat").hidden = id === null;
  $("chat-empty").hidden = id !== null;
  if (id === null) return;
  renderChatHead();
  renderTranscript();
}

function renderChatHead() {
  const record = state.conversations.get(state.openId);
  if (!record) return;
  const view = record.view;
  $("chat-title").textContent = `${customerLabel(view)} · ${view.skill_group ?? ""} · ${t("stateLabel", { state: t(view.state) })}`;
  const open = view.state !== "closed" && !state.readOnly;
  $("close-button").hidden = !open;
  $("ticket-button").hidden = Boolean(state.readOnly);
  $("transfer-button").hidden = !(open && view.state === "active");
  $("assign-form").hidden = !(oversees() && view.state === "queued" && !state.readOnly);
  $("composer").hidden = !open || (isAgent() && view.state !== "active");
  $("read-only").hidden = !state.readOnly;
  const noteOnly = oversees() || $("note-mode").checked;
  $("composer").classList.toggle("noting", noteOnly);
  $("composer-label").textContent = noteOnly ? t("noteComposer") : t("composer");
  $("attach-button").hidden = noteOnly; // a note carries no file, and supervisors write notes
  $("send-button").textContent = noteOnly ? t("addNote") : t("send");
}

function renderTranscript() {
  renderChatHead();
  const record = state.readOnly ?? state.conversations.get(state.openId);
  if (!record) return;
  const view = state.conversations.get(state.openId)?.view ?? {};
  const events = [...record.events.values()].sort((a, b) => a.seq - b.seq);
  const items = [];
  for (const event of events) {
    const item = transcriptItem(event, state.readOnly ? {} : view);
    if (item) items.push(item);
  }
  const transcript = $("transcript");
  const atEnd = transcript.scrollTop + transcript.clientHeight >= transcript.scrollHeight - 40;
  transcript.replaceChildren(...items);
  if (atEnd) transcript.scrollTop = transcript.scrollHeight;
  renderTyping();
  if (!state.readOnly) markRead();
}

/** What an attachment's message shows, made once per attachment (its image stays loaded). */
function attachmentOf(data) {
  const id = data.attachment?.attachment_id;
  if (typeof id !== "string") return null;
  if (!state.attachmentViews.has(id)) {
    const words = {
      image: t("image"),
      video: t("video"),
      openImage: t("openImage"),
      closeViewer: t("closeViewer"),
      file: (size) => t("fileLink", { size }),
    };
    state.attachmentViews.set(id, attachmentView(data.attachment, { tickets: state.tickets, words }));
  }
  return state.attachmentViews.get(id);
}

function messageContent(data) {
  const content = data.content ?? "";
  const attached = attachmentOf(data);
  if (attached) {
    const shown = element("div", { className: "attachment" }, attached);
    if (content) shown.append(element("p", { className: "text", text: content }));
    return shown;
  }
  if ((data.message_type === "image" || data.message_type === "video") && content.startsWith("https://")) {
    return element("a", { text: content, attrs: { href: content, target: "_blank", rel: "noopener noreferrer" } });
  }
  return element("p", { className: "text", text: content });
}

function transcriptItem(event, view) {
  const data = event.data ?? {};
  const time = new Date(event.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (event.type === "message.created" && data.sender_role === "bot") return botMessage(event, data, time);
  if (event.type === "conversation.handed_off") return handOffLine(event, data, time);
  if (event.type === "message.created") {
    const mine = data.sender_role !== "visitor";
    const who = data.sender_role === "visitor" ? t("visitor") : data.sender_id === state.me.id ? t("you") : data.sender_id ?? t("agent");
    const item = element("li", { className: mine ? "message agent" : "message visitor", attrs: { "data-seq": event.seq } });
    item.append(element("span", { className: "meta", text: `${who} · ${time}` }), messageContent(data));
    if (mine && event.seq <= (view.visitor_read_seq ?? 0)) item.append(element("span", { className: "receipt", text: `✓ ${t("read")}` }));
    return item;
  }
  if (event.type === "note.created") {
    const label = data.kind === "transfer" ? t("transferNoteBy", { by: data.by }) : t("noteBy", { by: data.by });
    const item = element("li", { className: "note", attrs: { "data-seq": event.seq } });
    item.append(element("span", { className: "meta", text: `${label} · ${time}` }), element("p", { className: "text", text: data.text ?? "" }));
    return item;
  }
  if (event.type === "rating.submitted") {
    const resolved = data.resolved === true ? t("ratedResolved") : data.resolved === false ? t("ratedUnresolved") : "";
    const text = t("rated", { stars: "★".repeat(data.score) + "☆".repeat(5 - data.score), score: data.score, resolved });
    return element("li", { className: "system rating", attrs: { "data-seq": event.seq } }, element("span", { className: "meta", text: `${t("system")} · ${time}` }), element("p", { className: "text", text }));
  }
  if (typeof data.text === "string" && data.text) {
    return element("li", { className: "system", attrs: { "data-seq": event.seq } }, element("span", { className: "meta", text: `${t("system")} · ${time}` }), element("p", { className: "text", text: data.text }));
  }
  return null;
}

/** A message of the bot's (before the hand-off), with the buttons it offered the visitor. */
function botMessage(event, data, time) {
  const item = element("li", { className: "message bot", attrs: { "data-seq": event.seq } });
  item.append(element("span", { className: "meta", text: `${t("bot")} · ${time}` }), messageContent(data));
  const replies = Array.isArray(data.quick_replies) ? data.quick_replies : [];
  if (replies.length) {
    item.append(element("p", { className: "offered", text: t("quickRepliesOffered", { replies: replies.join(" · ") }) }));
  }
  return item;
}

/** The bot's hand-off to a person (转人工): why, to which group, and the FAQ entries the bot
 * had answered with (staff only: the visitor's events carry neither). */
function handOffLine(event, data, time) {
  const reason = t(`handoff_${data.reason}`);
  const group = data.skill_group ? ` (${t("handedOffTo", { group: data.skill_group })})` : "";
  const entries = Array.isArray(data.matched_entries) ? data.matched_entries : [];
  const item = element("li", { className: "system handoff", attrs: { "data-seq": event.seq } });
  item.append(
    element("span", { className: "meta", text: `${t("system")} · ${time}` }),
    element("p", { className: "text reason", text: `${t("handedOff", { reason })}${group}` }),
    element("p", { className: "text entries", text: entries.length ? t("matchedEntries", { entries: entries.join(", ") }) : t("noMatchedEntries") }),
  );
  if (typeof data.text === "string" && data.text) item.append(element("p", { className: "text", text: data.text }));
  return item;
}

async function markRead() {
  const record = state.conversations.get(state.openId);
  if (!isAgent() || !record || document.hidden || record.view.state !== "active") return;
  const newest = Math.max(0, ...record.events.keys());
  if (newest <= (record.view.agent_read_seq ?? 0) || !unreadOf(record)) return;
  record.view.agent_read_seq = newest;
  renderList();
  try {
    await api("POST", `/v1/conversations/${encodeURIComponent(record.view.id)}/read`, { seq: newest });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) failed(error);
  }
}

function send(event) {
  event?.preventDefault();
  const text = $("composer-text").value;
  const id = state.openId;
  if (!text.trim() || !id) return;
  // In the order written, one after the other; the composer empties once its text is through.
  state.sending = state.sending.then(() => deliver(id, text));
}

async function deliver(id, text) {
  const path = `/v1/conversations/${encodeURIComponent(id)}`;
  try {
    if (oversees() || $("note-mode").checked) {
      addEvent(id, await api("POST", `${path}/notes`, { content: text }));
    } else {
      // A text that failed is sent again with its id: stored once however often it is tried.
      if (state.pending?.text !== text || state.pending.conversation !== id) {
        state.pending = { text, conversation: id, clientMessageId: newClientMessageId() };
      }
      const body = { client_message_id: state.pending.clientMessageId, type: "text", content: text };
      const message = await api("POST", `${path}/messages`, body);
      state.pending = null;
      addEvent(id, messageEvent(message));
    }
  } catch (error) {
    failed(error); // the text stays in the composer
    return;
  }
  if ($("composer-text").value === text) {
    $("composer-text").value = "";
    hideCanned();
  }
  renderTranscript();
  renderList();
}

/** A message the API answered, as its event (until the stream brings the event itself). */
function messageEvent(message) {
  return {
    seq: message.seq,
    type: "message.created",
    at: message.created_at,
    data: {
      sender_role: message.sender_role,
      sender_id: message.sender_id,
      content: message.content,
      message_type: message.type,
      attachment: message.attachment ?? undefined,
    },
  };
}

/** Upload the files the agent chose, pasted or dropped into the open conversation, then send
 * each as its message, in order after what is being sent; a refused one is said above the
 * composer. */
function attach(files) {
  const id = state.openId;
  $("attach-error").textContent = "";
  uploadFiles(staffApi(), id, files, {
    list: $("uploads"),
    words: {
      uploading: (name) => t("uploading", { name }),
      refused: (name, reason) => t("attachmentRefused", { name, reason }),
      uploadFailed: (name) => t("uploadFailed", { name }),
    },
    taken: (attachment) => {
      state.sending = state.sending.then(() => sendAttachment(id, attachment));
    },
    refused: (sentence) => {
      $("attach-error").textContent = sentence;
    },
  });
}

async function sendAttachment(id, attachment) {
  // Tried again with its id on a 503 or a lost answer: stored once however often it is tried.
  const body = { client_message_id: newClientMessageId(), type: attachment.kind, attachment_id: attachment.attachment_id };
  for (let attempt = 1; ; attempt += 1) {
    try {
      addEvent(id, messageEvent(await api("POST", `/v1/conversations/${encodeURIComponent(id)}/messages`, body)));
      break;
    } catch (error) {
      if (!(error instanceof ApiError && error.retriable) || attempt === 3) return failed(error);
      await new Promise((resolve) => setTimeout(resolve, Math.max(error.retryAfter * 1000, 1000)));
    }
  }
  if (state.openId === id && !state.readOnly) renderTranscript();
  renderList();
}

function composerKey(event) {
  const listOpen = !$("canned").hidden && state.canned.replies.length > 0;
  if (listOpen && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : -1;
    state.canned.active = (state.canned.active + step + state.canned.replies.length) % state.canned.replies.length;
    renderCanned();
    return;
  }
  if (listOpen && event.key === "Escape") {
    hideCanned();
    return;
  }
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    if (listOpen) useCanned(state.canned.replies[state.canned.active]);
    else send();
  }
}

function composerInput() {
  const text = $("composer-text").value;
  const shortcut = /^\/([^\s]*)$/.exec(text);
  if (shortcut) {
    findCanned(shortcut[1]).catch(failed);
    return;
  }
  hideCanned();
  sendTyping();
}

function sendTyping() {
  const id = state.openId;
  if (!isAgent() || $("note-mode").checked || !$("composer-text").value.trim() || !id) return;
  const wait = state.typingSentAt + TYPING_SENT_EVERY_MS - Date.now();
  if (wait > 0) {
    // Typed again within the interval: say so when it has passed, if the text is still there.
    state.typingLater ??= setTimeout(() => {
      state.typingLater = null;
      sendTyping();
    }, wait);
    return;
  }
  state.typingSentAt = Date.now();
  api("POST", `/v1/conversations/${encodeURIComponent(id)}/typing`).catch(() => {});
}

async function findCanned(q) {
  const asked = ++state.canned.asked;
  const answer = await api("GET", `/v1/canned-replies${query({ q: q.slice(0, 100), conversation_id: state.openId })}`);
  if (asked !== state.canned.asked) return; // a newer search is on its way
  state.canned.replies = answer.canned_replies;
  state.canned.active = 0;
  renderCanned();
}

function renderCanned() {
  const list = $("canned");
  const replies = state.canned.replies;
  list.hidden = false;
  if (replies.length === 0) {
    list.replaceChildren(element("li", { className: "hint", text: t("noCannedReply"), attrs: { role: "option", "aria-disabled": "true", id: "canned-none" } }));
    return;
  }
  list.replaceChildren(
    ...replies.map((reply, index) => {
      const option = element("li", { attrs: { role: "option", id: `canned-${index}`, "aria-selected": String(index === state.canned.active) } });
      option.append(element("strong", { text: `/${reply.shortcut}` }), element("span", { text: ` ${reply.title} — ${reply.text}` }));
      option.addEventListener("mousedown", (event) => {
        event.preventDefault();
        useCanned(reply);
      });
      return option;
    }),
  );
  $("composer-text").setAttribute("aria-activedescendant", `canned-${state.canned.active}`);
}

function hideCanned() {
  state.canned.replies = [];
  state.canned.asked += 1;
  $("canned").hidden = true;
  $("composer-text").removeAttribute("aria-activedescendant");
}

function useCanned(reply) {
  if (!reply) return;
  $("composer-text").value = reply.text;
  hideCanned();
  $("composer-text").focus();
}

async function closeOpen() {
  const id = state.openId;
  try {
    const view = await api("POST", `/v1/conversations/${encodeURIComponent(id)}/close`);
    const record = state.conversations.get(id);
    if (record) record.view = { ...record.view, ...view };
  } catch (error) {
    failed(error);
  }
  renderList();
  renderTranscript();
}

async function transfer(event) {
  event.preventDefault();
  const id = state.openId;
  const toAgent = $("transfer-agent").value.trim();
  const toGroup = $("transfer-group").value;
  const note = $("transfer-note").value.trim();
  const body = toAgent ? { to_agent_id: toAgent } : { to_skill_group: toGroup };
  if (note) body.note = note;
  try {
    await api("POST", `/v1/conversations/${encodeURIComponent(id)}/transfer`, body);
  } catch (error) {
    failed(error);
    return;
  }
  $("transfer-form").hidden = true;
  $("transfer-form").reset();
  if (isAgent()) {
    state.conversations.delete(id);
    state.loading.delete(id);
    showChat(null);
    $("panel-body").replaceChildren();
  }
  renderList();
}

async function assign(event) {
  event.preventDefault();
  const id = state.openId;
  try {
    const view = await api("POST", `/v1/conversations/${encodeURIComponent(id)}/assign`, { agent_id: $("assign-agent").value.trim() });
    state.conversations.get(id).view = view;
    $("assign-form").reset();
  } catch (error) {
    failed(error);
  }
  renderList();
  renderChatHead();
}

// --- the customer panel -----------------------------------------------------------------------

function definitions(pairs) {
  const list = element("dl");
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    const shown = typeof value === "object" && !(value instanceof Node) ? attributeValue(value) : value instanceof Node ? value : String(value);
    list.append(element("dt", { text: term }), element("dd", {}, shown));
  }
  return list;
}

function attributeValue(value) {
  if (Array.isArray(value)) return value.map(String).join(", ");
  return definitions(Object.entries(value));
}

async function renderPanel() {
  const record = state.conversations.get(state.openId);
  const body = $("panel-body");
  if (!record) {
    body.replaceChildren();
    return;
  }
  const view = record.view;
  const sections = [
    definitions([
      [t("customerId"), view.customer_id],
      [t("order"), view.order_id],
      [t("channel"), view.channel],
      [t("entry"), view.entry],
      [t("tier"), view.tier],
      [t("language"), view.language],
      [t("skillGroup"), view.skill_group],
    ]),
  ];
  if (view.attributes && Object.keys(view.attributes).length) {
    sections.push(element("h3", { text: t("attributes") }), definitions(Object.entries(view.attributes)));
  }
  sections.push(element("h3", { text: t("sop") }));
  if (view.sop) {
    const steps = element("ol", { className: "sop" });
    for (const step of view.sop.steps) {
      const item = element("li", {}, element("span", { text: step.text }));
      if (step.canned_reply && view.state === "active") {
        const use = element("button", { className: "small", text: t("useReply", { shortcut: step.canned_reply }), attrs: { type: "button" } });
        use.addEventListener("click", () => useShortcut(step.canned_reply).catch(failed));
        item.append(" ", use);
      }
      steps.append(item);
    }
    sections.push(element("p", { className: "sop-title", text: view.sop.title }), steps);
  } else {
    sections.push(element("p", { className: "hint", text: t("noSop") }));
  }
  const history = element("div", { attrs: { id: "history" } });
  sections.push(element("h3", { text: t("history") }), history);
  sections.push(element("h3", { text: t("customerTickets") }), element("div", { attrs: { id: "customer-tickets" } }));
  body.replaceChildren(...sections);
  renderCustomerTickets(view.id);
  try {
    const past = await api("GET", `/v1/customers/${encodeURIComponent(view.customer_id)}/conversations`);
    renderHistory(history, past.filter((item) => item.id !== view.id));
  } catch (error) {
    history.replaceChildren(element("p", { className: "hint", text: t("noHistory") }));
  }
}

function renderHistory(container, past) {
  if (past.length === 0) {
    container.replaceChildren(element("p", { className: "hint", text: t("noHistory") }));
    return;
  }
  const list = element("ul", { className: "history" });
  for (const item of past) {
    const when = new Date(item.created_at).toLocaleString();
    const summary = [when, item.skill_group, item.agent_name, item.close_reason ? t(`reason_${item.close_reason}`) : t(item.state)];
    if (item.rating_score) summary.push("★".repeat(item.rating_score));
    const open = element("button", { className: "small", text: t("open"), attrs: { type: "button", "aria-label": `${t("open")}: ${when}` } });
    open.addEventListener("click", () => openReadOnly(item.id).catch(failed));
    list.append(element("li", {}, element("span", { text: summary.filter(Boolean).join(" · ") }), " ", open));
  }
  container.replaceChildren(list);
}

async function openReadOnly(id) {
  const events = await loadEvents(id);
  state.readOnly = { id, events: new Map(events.map((event) => [event.seq, event])) };
  renderTranscript();
  $("back-to-chat").focus();
}

async function useShortcut(shortcut) {
  const answer = await api("GET", `/v1/canned-replies${query({ q: shortcut, conversation_id: state.openId })}`);
  const reply = answer.canned_replies.find((item) => item.shortcut === shortcut);
  useCanned(reply);
}

async function refreshFigures() {
  const figures = await api("GET", "/v1/monitor");
  const list = element("ul", { className: "figures" });
  for (const group of figures.skill_groups) {
    const parts = [t("waitingCount", { count: group.waiting }), t("agentsOnline", { count: group.agents_online })];
    if (group.longest_wait_seconds) parts.splice(1, 0, t("longestWait", { duration: duration(group.longest_wait_seconds) }));
    list.append(element("li", {}, element("strong", { text: group.skill_group }), element("span", { text: ` ${parts.join(" · ")}` })));
  }
  $("queue-figures").replaceChildren(list);
}

// --- left messages ------------------------------------------------------------------------------

// The open left messages of the member's groups (out of hours, after an overflow): each with the
// visitor's words and how to reach them, and a way to mark it called back (with a note).
async function refreshLeftMessages() {
  if (document.querySelector("#left-messages form")) return; // someone is writing a note
  const messages = await api("GET", "/v1/left-messages");
  const items = messages.map((left) => {
    const resolve = element("button", { text: t("resolveLeft"), attrs: { type: "button" } });
    const makeTicket = element("button", { className: "secondary", text: t("createTicketEllipsis"), attrs: { type: "button" } });
    const item = element(
      "li",
      { attrs: { "data-id": String(left.id) } },
      element("p", { className: "meta", text: `${left.skill_group ?? "—"} · ${new Date(left.created_at).toLocaleString()}` }),
      element("p", { className: "text", text: left.content }),
      element("p", { className: "meta", text: left.contact ? t("leftContact", { contact: left.contact }) : t("leftNoContact") }),
      element("div", { className: "row" }, resolve, makeTicket),
    );
    resolve.addEventListener("click", () => item.append(resolveForm(left, item)));
    makeTicket.addEventListener("click", () => item.append(leftTicketForm(left, item)));
    return item;
  });
  $("left-messages").replaceChildren(
    ...(items.length ? items : [element("li", { className: "hint", text: t("noLeftMessages") })]),
  );
}

function resolveForm(left, item) {
  const form = element("form", { className: "inline-form" });
  const noteId = `left-note-${left.id}`;
  const note = element("input", { attrs: { id: noteId, maxlength: "2000", autocomplete: "off" } });
  form.append(
    element("label", { text: t("leftNote"), attrs: { for: noteId } }),
    note,
    element("button", { text: t("markCalledBack"), attrs: { type: "submit" } }),
  );
  item.querySelector(".row").hidden = true;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", `/v1/left-messages/${left.id}/resolve`, { note: note.value.trim() || null });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) return failed(error);
      // A colleague called back first: it is done either way.
    }
    form.remove();
    await refreshLeftMessages().catch(failed);
  });
  setTimeout(() => note.focus());
  return form;
}

/** A ticket of a left message (which it resolves): the form under the message. */
function leftTicketForm(left, item) {
  item.querySelector(".row").hidden = true;
  return desk.form({
    idPrefix: `left-ticket-${left.id}`,
    path: `/v1/left-messages/${left.id}/ticket`,
    description: left.content,
    made: (ticket, form) => {
      form.remove();
      ticketMade(ticket);
      refreshLeftMessages().catch(failed);
    },
    cancelled: (form) => {
      form.remove();
      item.querySelector(".row").hidden = false;
    },
  });
}

// --- wiring -----------------------------------------------------------------------------------

function wire() {
  translatePage();
  signInView = signInForm($("sign-in-view"), { check: "/v1/me", onSignedIn: start });
  $("sign-out").addEventListener("click", signOut);
  $("presence").addEventListener("change", setPresence);
  $("composer").addEventListener("submit", send);
  $("attach-input").accept = PICKER_ACCEPT;
  $("attach-button").prepend(paperclipIcon());
  $("attach-button").title = t("attachHelp");
  $("attach-button").addEventListener("click", () => $("attach-input").click());
  takeFiles({
    picker: $("attach-input"),
    composer: $("composer-text"),
    zone: $("chat"),
    onFiles: attach,
    accepting: () => !$("composer").hidden && !$("attach-button").hidden && !state.readOnly,
  });
  $("composer-text").addEventListener("keydown", composerKey);
  $("composer-text").addEventListener("input", composerInput);
  $("composer-text").addEventListener("blur", () => setTimeout(hideCanned, 150));
  $("note-mode").addEventListener("change", renderChatHead);
  $("close-button").addEventListener("click", closeOpen);
  $("ticket-button").addEventListener("click", toggleTicketForm);
  $("tab-conversations").addEventListener("click", () => showView("conversations"));
  $("tab-tickets").addEventListener("click", () => showView("tickets"));
  desk.wire();
  $("transfer-button").addEventListener("click", () => {
    $("transfer-form").hidden = !$("transfer-form").hidden;
    if (!$("transfer-form").hidden) $("transfer-agent").focus();
  });
  $("transfer-cancel").addEventListener("click", () => {
    $("transfer-form").hidden = true;
  });
  $("transfer-form").addEventListener("submit", transfer);
  $("assign-form").addEventListener("submit", assign);
  $("back-to-chat").addEventListener("click", () => {
    state.readOnly = null;
    renderTranscript();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) markRead();
  });
  if (session.token) start().catch(failed);
  else showSignIn();
}

wire();
