// The demo shop's page: what your site does. Its "backend" (POST /demo/conversations, served
// by a development API only) starts the conversation with the app key and answers the visitor
// token; the page then embeds the widget with the one script tag, as your pages would.

const SESSION_KEY = "switchboard.demo.session";
const $ = (id) => document.getElementById(id);

function embed(session) {
  // What your server would render into the page: the tag, with the id and the visitor token.
  document.querySelector("script[data-switchboard]")?.remove();
  const tag = document.createElement("script");
  tag.src = "/widget/embed.js";
  tag.async = true;
  tag.dataset.switchboard = "";
  tag.dataset.conversationId = session.conversationId;
  tag.dataset.visitorToken = session.visitorToken;
  tag.dataset.open = "true";
  document.body.append(tag);
  $("start").hidden = true;
  $("started").hidden = false;
}

async function start(event) {
  event.preventDefault();
  const fields = Object.fromEntries(
    [...new FormData($("start")).entries()].filter(([, value]) => value.trim() !== ""),
  );
  $("error").textContent = "";
  let answer;
  try {
    answer = await fetch("/demo/conversations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...fields, channel: "web" }),
    });
  } catch {
    $("error").textContent = "The API did not answer: is make run going?";
    return;
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const detail = typeof body.detail === "string" ? body.detail : "check the fields";
    $("error").textContent = `Could not start a chat (${answer.status}): ${detail}`;
    return;
  }
  const session = { conversationId: body.id, visitorToken: body.visitor_token };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  embed(session);
}

/** The widget as a full page (a phone's way): it asks its opener for the session. */
function openFullPage() {
  const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
  const opened = window.open("/widget/", "switchboard-chat");
  const answer = (event) => {
    if (event.source !== opened || event.origin !== location.origin) return;
    if (event.data?.type === "switchboard:ready") {
      opened.postMessage({ type: "switchboard:session", ...session }, location.origin);
      window.removeEventListener("message", answer);
    }
  };
  window.addEventListener("message", answer);
}

function restart() {
  sessionStorage.removeItem(SESSION_KEY);
  window.SwitchboardWidget?.remove();
  $("started").hidden = true;
  $("start").hidden = false;
}

$("customer-id").value = `demo-${Math.random().toString(16).slice(2, 8)}`;
$("start").addEventListener("submit", start);
$("full-page").addEventListener("click", openFullPage);
$("restart").addEventListener("click", restart);
const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
if (saved) embed(saved); // a reload: your server renders the tag again
