// Tickets (工单) in the workbench: made from a conversation or a left message, and the Tickets
// view (the agent's own and their groups', a supervisor's groups'), with a ticket's comments
// (public or internal), status, priority and assignee. There is no ticket stream: the view
// asks again after each action and every 30 seconds while it is shown.
// Text from people is inserted as text (web/shared/dom.js), never as HTML.

import { el } from "../shared/dom.js";
import { api, query } from "./api.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

const POLL_MS = 30_000;
const PAGE_SIZE = 20;
export const PRIORITIES = ["low", "normal", "high", "urgent"];
// The status changes the API allows (PATCH /v1/tickets/{id}), in the order offered.
const NEXT_STATUSES = { open: ["pending", "solved"], pending: ["open", "solved"], solved: ["open", "closed"], closed: [] };
const STATUS_ACTION = { open: "setOpen", pending: "setPending", solved: "setSolved", closed: "setClosed" };

const when = (at) => (at ? new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : null);

/** The ticket's due time that breached (first response before resolution), or null. */
function breachedDue(ticket) {
  const sla = ticket.sla ?? {};
  if (sla.first_response_breached_at) return sla.first_response_due_at;
  if (sla.resolution_breached_at) return sla.resolution_due_at;
  return null;
}

/** The Tickets view and the ticket forms, for the signed-in member of staff `me()`. */
export class TicketDesk {
  constructor({ me, failed, banner }) {
    this.me = me;
    this.failed = failed;
    this.banner = banner;
    this.pages = [0]; // the `after` of each page shown so far (the API pages by id)
    this.nextAfter = null;
    this.openId = null;
    this.poll = null;
  }

  wire() {
    $("ticket-scope").addEventListener("change", () => this.firstPage());
    $("ticket-status").addEventListener("change", () => this.firstPage());
    $("ticket-breached").addEventListener("change", () => this.firstPage());
    $("tickets-first").addEventListener("click", () => this.firstPage());
    $("tickets-previous").addEventListener("click", () => {
      this.pages.pop();
      this.refreshList().catch(this.failed);
    });
    $("tickets-next").addEventListener("click", () => {
      if (this.nextAfter === null) return;
      this.pages.push(this.nextAfter);
      this.refreshList().catch(this.failed);
    });
    for (const radio of document.querySelectorAll('input[name="comment-visibility"]')) {
      radio.addEventListener("change", () => this.renderCommentMode());
    }
    $("ticket-comment-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.comment().catch(this.failed);
    });
    $("ticket-priority-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.change({ priority: $("ticket-priority").value }).catch(this.failed);
    });
    this.renderCommentMode();
  }

  /** Signed in: agents start on their own tickets, supervisors and admins on their groups'. */
  start() {
    $("ticket-scope").value = this.me().role === "agent" ? "mine" : "all";
    $("ticket-scope").querySelector('option[value="mine"]').hidden = this.me().role !== "agent";
  }

  /** The view is shown: fresh now, then every POLL_MS while it stays shown. */
  shown() {
    this.refresh().catch(this.failed);
    clearInterval(this.poll);
    this.poll = setInterval(() => this.refresh().catch(() => {}), POLL_MS);
  }

  hidden() {
    clearInterval(this.poll);
    this.poll = null;
  }

  reset() {
    this.hidden();
    this.openId = null;
    this.pages = [0];
    $("ticket-list").replaceChildren();
    this.showTicket(null);
  }

  async refresh() {
    await Promise.all([this.refreshList(), this.openId ? this.load(this.openId) : null]);
  }

  firstPage() {
    this.pages = [0];
    this.refreshList().catch(this.failed);
  }

  filters() {
    const scope = $("ticket-scope").value;
    const filters = { after: this.pages[this.pages.length - 1], limit: PAGE_SIZE };
    if (scope === "mine") filters.assignee_id = this.me().id;
    if (scope === "pool") filters.unassigned = "true";
    if ($("ticket-breached").checked) filters.breached = "true";
    const statuses = $("ticket-status").value.split(",").filter(Boolean);
    const params = new URLSearchParams(query(filters).slice(1));
    for (const status of statuses) params.append("status", status);
    return `?${params}`;
  }

  async refreshList() {
    const page = await api("GET", `/v1/tickets${this.filters()}`);
    this.nextAfter = page.next_after;
    const items = page.tickets.map((ticket) => this.listItem(ticket));
    const list = $("ticket-list");
    // Refreshed every 30 s: keyboard focus stays on the ticket it was on.
    const focused = document.activeElement?.closest?.("#ticket-list button")?.dataset.id;
    list.replaceChildren(...(items.length ? items : [el("li", { class: "hint" }, t("noTickets"))]));
    if (focused) list.querySelector(`button[data-id="${CSS.escape(focused)}"]`)?.focus();
    $("tickets-first").hidden = $("tickets-previous").hidden = this.pages.length === 1;
    $("tickets-next").hidden = this.nextAfter === null;
    const paged = this.pages.length > 1 || this.nextAfter !== null;
    $("tickets-page").textContent = paged ? t("ticketsPage", { page: this.pages.length }) : "";
  }

  listItem(ticket) {
    const due = breachedDue(ticket);
    const details = [t(`ticketStatus_${ticket.status}`), t(`priority_${ticket.priority}`), ticket.skill_group, ticket.assignee_id ?? t("pool")];
    const button = el(
      "button",
      {
        type: "button",
        class: ticket.breached ? "conversation ticket-item breached" : "conversation ticket-item",
        "data-id": ticket.id,
        "aria-current": ticket.id === this.openId ? "true" : null,
        on: { click: () => this.open(ticket.id).catch(this.failed) },
      },
      el("span", { class: "name" }, `#${ticket.id} ${ticket.subject}`),
      el("span", { class: "details" }, details.filter(Boolean).join(" · ")),
      el("span", { class: "details" }, ticket.customer_id),
      due ? el("span", { class: "breach" }, t("breachedDue", { due: when(due) })) : null,
    );
    return el("li", {}, button);
  }

  async open(id) {
    this.openId = id;
    await this.load(id);
    for (const button of $("ticket-list").querySelectorAll("button[data-id]")) {
      button.setAttribute("aria-current", String(Number(button.dataset.id) === id));
    }
    $("ticket-title").focus();
  }

  async load(id) {
    const ticket = await api("GET", `/v1/tickets/${id}`);
    if (this.openId === id) this.showTicket(ticket);
  }

  showTicket(ticket) {
    this.ticket = ticket;
    $("ticket").hidden = ticket === null;
    $("ticket-empty").hidden = ticket !== null;
    if (!ticket) {
      $("ticket-facts").replaceChildren();
      return;
    }
    $("ticket-title").textContent = `#${ticket.id} ${ticket.subject}`;
    const assignee = ticket.assignee_id === this.me().id ? t("assignedToYou") : ticket.assignee_id ?? t("pool");
    const summary = [
      el("span", { class: `status status-${ticket.status}` }, t(`ticketStatus_${ticket.status}`)),
      el("span", {}, ` · ${t("priorityLabel", { priority: t(`priority_${ticket.priority}`) })}`),
      el("span", {}, ` · ${t("assigneeLabel", { assignee })}`),
    ];
    if (ticket.breached) summary.push(el("span", { class: "breach" }, ` · ${t("breached")}`));
    $("ticket-summary").replaceChildren(...summary);
    $("ticket-description").textContent = ticket.description || t("noDescription");
    const closed = ticket.status === "closed";
    const actions = NEXT_STATUSES[ticket.status].map((status) =>
      el(
        "button",
        { type: "button", class: status === "closed" ? "secondary" : null, on: { click: () => this.change({ status }).catch(this.failed) } },
        t(status === "open" && ticket.status === "solved" ? "setReopened" : STATUS_ACTION[status]),
      ),
    );
    if (!closed && this.me().role === "agent" && ticket.assignee_id !== this.me().id) {
      actions.push(el("button", { type: "button", on: { click: () => this.change({ assignee_id: this.me().id }).catch(this.failed) } }, t("takeTicket")));
    }
    if (!closed && ticket.assignee_id === this.me().id) {
      actions.push(el("button", { type: "button", class: "secondary", on: { click: () => this.change({ assignee_id: null }).catch(this.failed) } }, t("releaseTicket")));
    }
    $("ticket-actions").replaceChildren(...actions);
    $("ticket-priority-form").hidden = closed;
    if (document.activeElement !== $("ticket-priority")) $("ticket-priority").value = ticket.priority;
    $("ticket-comment-form").hidden = closed;
    $("ticket-comments").replaceChildren(
      ...(ticket.comments.length ? ticket.comments.map((comment) => this.commentItem(comment)) : [el("li", { class: "hint" }, t("noComments"))]),
    );
    $("ticket-facts").replaceChildren(...this.facts(ticket));
  }

  commentItem(comment) {
    const who = comment.author_role === "customer" ? t("customer") : comment.author_id === this.me().id ? t("you") : comment.author_id ?? t(comment.author_role);
    const kind = comment.public ? t("publicComment") : t("internalComment");
    return el(
      "li",
      { class: comment.public ? "comment public" : "comment internal", "data-id": comment.id },
      el("span", { class: "meta" }, `${kind} · ${who} · ${when(comment.created_at)}`),
      el("p", { class: "text" }, comment.content),
    );
  }

  facts(ticket) {
    const sla = ticket.sla ?? {};
    const rows = (pairs, className = null) => {
      const list = el("dl", { class: className });
      for (const [term, value, className] of pairs) {
        if (value === null || value === undefined || value === "") continue;
        list.append(el("dt", {}, term), el("dd", { class: className ?? null }, String(value)));
      }
      return list;
    };
    const sections = [
      rows([
        [t("customerId"), ticket.customer_id],
        [t("order"), ticket.order_id],
        [t("skillGroup"), ticket.skill_group],
        [t("createdAt"), when(ticket.created_at)],
        [t("closedAt"), when(ticket.closed_at)],
      ]),
    ];
    if (ticket.attributes && Object.keys(ticket.attributes).length) {
      sections.push(
        el("h3", {}, t("attributes")),
        rows(Object.entries(ticket.attributes).map(([key, value]) => [key, typeof value === "object" ? JSON.stringify(value) : value])),
      );
    }
    sections.push(el("h3", {}, t("sla")));
    const slaRows = [
      [t("firstResponseDue"), when(sla.first_response_due_at)],
      [t("firstResponded"), when(sla.first_responded_at)],
      [t("firstResponseBreached"), when(sla.first_response_breached_at), "breach"],
      [t("resolutionDue"), when(sla.resolution_due_at)],
      [t("resolutionBreached"), when(sla.resolution_breached_at), "breach"],
    ];
    sections.push(slaRows.some(([, value]) => value) ? rows(slaRows, "stacked") : el("p", { class: "hint" }, t("noSla")));
    sections.push(el("h3", {}, t("linked")));
    const links = ticket.links ?? [];
    sections.push(
      links.length
        ? el(
            "ul",
            { class: "history links" },
            ...links.map((link) =>
              el(
                "li",
                {},
                link.conversation_id ? t("linkedConversation", { id: link.conversation_id }) : t("linkedLeftMessage", { id: link.left_message_id }),
                el("span", { class: "hint" }, ` · ${when(link.linked_at)}`),
              ),
            ),
          )
        : el("p", { class: "hint" }, t("noLinks")),
    );
    return sections;
  }

  renderCommentMode() {
    const isPublic = $("comment-public").checked;
    $("ticket-comment-form").classList.toggle("noting", !isPublic);
    $("ticket-comment-form").classList.toggle("public", isPublic);
    $("comment-warning").hidden = !isPublic;
    $("comment-button").textContent = isPublic ? t("sendPublicComment") : t("addInternalComment");
  }

  async comment() {
    const text = $("ticket-comment-text").value;
    const id = this.openId;
    if (!text.trim() || id === null) return;
    const ticket = await api("POST", `/v1/tickets/${id}/comments`, { content: text, public: $("comment-public").checked });
    $("ticket-comment-text").value = "";
    $("comment-internal").checked = true; // a public reply is chosen each time, never left on
    this.renderCommentMode();
    this.showTicket(ticket);
    await this.refreshList();
  }

  async change(body) {
    const ticket = await api("PATCH", `/v1/tickets/${this.openId}`, body);
    this.showTicket(ticket);
    await this.refreshList();
  }

  // --- making tickets ----------------------------------------------------------------------------

  /** The form that makes a ticket: `path` is where it posts (a conversation's or a left
   * message's), `made(ticket)` hears the new ticket. */
  form({ idPrefix, path, description = "", made, cancelled }) {
    const subject = el("input", { id: `${idPrefix}-subject`, required: true, maxlength: 200, autocomplete: "off" });
    const text = el("textarea", { id: `${idPrefix}-description`, rows: 3, maxlength: 10000 });
    text.value = description;
    const priority = el("select", { id: `${idPrefix}-priority` }, ...PRIORITIES.map((name) => el("option", { value: name }, t(`priority_${name}`))));
    priority.value = "normal";
    const form = el(
      "form",
      { class: "transfer-form ticket-form" },
      el("h3", {}, t("createTicketHeading")),
      el("label", { for: subject.id }, t("ticketSubject")),
      subject,
      el("label", { for: text.id }, t("ticketDescription")),
      text,
      el("label", { for: priority.id }, t("ticketPriority")),
      priority,
      el(
        "div",
        { class: "row" },
        el("button", { type: "submit" }, t("createTicket")),
        el("button", { type: "button", class: "secondary", on: { click: () => cancelled(form) } }, t("cancel")),
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const ticket = await api("POST", path, { subject: subject.value.trim(), description: text.value.trim(), priority: priority.value });
        made(ticket, form);
      } catch (error) {
        this.failed(error);
      }
    });
    setTimeout(() => subject.focus());
    return form;
  }

  /** The customer's tickets (the panel beside a conversation), those linked to conversation
   * `conversationId` marked; `opened(id)` opens one in the Tickets view. */
  async customerTickets(container, customerId, conversationId, opened) {
    const page = await api("GET", `/v1/tickets${query({ customer_id: customerId, limit: PAGE_SIZE })}`);
    // A list's tickets come without their links: each one's own answer has them.
    const tickets = await Promise.all(page.tickets.map((ticket) => api("GET", `/v1/tickets/${ticket.id}`)));
    if (tickets.length === 0) {
      container.replaceChildren(el("p", { class: "hint" }, t("noCustomerTickets")));
      return;
    }
    container.replaceChildren(
      el(
        "ul",
        { class: "history customer-tickets" },
        ...tickets.map((ticket) => {
          const linked = (ticket.links ?? []).some((link) => link.conversation_id === conversationId);
          const summary = [`#${ticket.id} ${ticket.subject}`, t(`ticketStatus_${ticket.status}`), t(`priority_${ticket.priority}`)];
          if (linked) summary.push(t("linkedHere"));
          return el(
            "li",
            { "data-id": ticket.id, class: linked ? "linked" : null },
            el("span", {}, summary.join(" · ")),
            " ",
            el("button", { type: "button", class: "small", "aria-label": `${t("openTicket")}: #${ticket.id}`, on: { click: () => opened(ticket.id) } }, t("open")),
          );
        }),
      ),
    );
  }
}
