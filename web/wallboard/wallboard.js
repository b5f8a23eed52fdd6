// The supervisors' wallboard: GET /v1/monitor every few seconds, a row per skill group, and
// links into the Temporal UI with the README's filters (its address comes from the API).

import { api, ApiError, session } from "../workbench/api.js";
import { duration, t, translatePage } from "../workbench/i18n.js";
import { refusal, signInForm } from "../workbench/signin.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
let timer = null;

// Each column's heading, repeated on its cells for a narrow screen's cards.
const COLUMNS = ["queued", "agents", "load", "avgWait", "avgHandling", "overflowsToday", "abandonsToday", "autoClosesToday", "ratingsToday", "temporalLinks"];

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function labelled(cells) {
  cells.forEach((td, index) => td.setAttribute("data-label", t(COLUMNS[index])));
  return cells;
}

function seconds(value) {
  return value === null || value === undefined ? "—" : duration(value);
}

/** The Temporal UI's workflow list, filtered by a visibility query. */
function temporalLink(ui, label, filter) {
  const link = document.createElement("a");
  link.href = `${ui.url}/namespaces/${encodeURIComponent(ui.namespace)}/workflows?query=${encodeURIComponent(filter)}`;
  link.textContent = label;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  return link;
}

function links(ui, group, dayStart) {
  const td = cell("", "links");
  if (!ui) return td;
  const g = `SkillGroup = "${group}"`;
  td.append(
    temporalLink(ui, t("linkWaiting"), `ConversationState = "queued" AND ${g}`),
    temporalLink(ui, t("linkActive"), `ConversationState = "active" AND ${g}`),
    temporalLink(ui, t("linkAutoClosed"), `CloseReason = "idle_timeout" AND ${g} AND ClosedAt >= "${dayStart}"`),
    temporalLink(ui, t("linkOverflowed"), `OverflowHops > 0 AND ${g} AND StartTime >= "${dayStart}"`),
  );
  return td;
}

function render(figures) {
  const dayStart = new Date(figures.day_started_at).toISOString().replace(/\.\d+Z$/, "Z");
  const rows = figures.skill_groups.map((group) => {
    const row = document.createElement("tr");
    row.dataset.group = group.skill_group;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = group.skill_group;
    const waiting = group.waiting ? `${group.waiting} (${t("longestWait", { duration: seconds(group.longest_wait_seconds) })})` : "0";
    const rating = group.ratings_today ? `${group.ratings_today} (${group.average_rating_today?.toFixed(1) ?? "—"})` : "0";
    row.append(
      name,
      ...labelled([
      cell(waiting, "number"),
      cell(`${group.agents_online} / ${group.agents_away} / ${group.agents_at_capacity}`, "number"),
      cell(`${group.load} / ${group.capacity}`, "number"),
      cell(seconds(group.average_wait_seconds)),
      cell(seconds(group.average_handling_seconds)),
      cell(String(group.overflows_today), "number"),
      cell(String(group.abandons_today), "number"),
      cell(String(group.auto_closes_today), "number"),
      cell(rating, "number"),
      links(figures.temporal_ui, group.skill_group, dayStart),
      ]),
    );
    return row;
  });
  $("groups").replaceChildren(...rows);
  $("no-ui").hidden = Boolean(figures.temporal_ui);
  $("updated").textContent = t("updated", { time: new Date(figures.at).toLocaleTimeString() });
}

async function refresh() {
  try {
    render(await api("GET", "/v1/monitor"));
  } catch (error) {
    if (error instanceof ApiError && [401, 403].includes(error.status)) signOut(refusal(error));
  }
}

let signInView = null;

function show() {
  signInView.hide();
  $("board").hidden = false;
  $("who").hidden = false;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut(message = "") {
  clearInterval(timer);
  session.signOut();
  $("board").hidden = true;
  $("who").hidden = true;
  signInView.show(message);
}

translatePage();
signInView = signInForm($("sign-in-view"), { check: "/v1/monitor", onSignedIn: show });
$("sign-out").addEventListener("click", () => signOut());
if (session.token) show();
else signOut();
