// The widget on an app's own site, with one tag:
//
//   <script src="https://chat.example.com/widget/embed.js" async
//           data-conversation-id="…" data-visitor-token="…"></script>
//
// Your backend starts the conversation (POST /v1/conversations with the app key, which never
// reaches a browser) and writes the id and the visitor token it answered into the tag. This
// script adds a "chat" button and, when it is pressed, the widget in an iframe on the API's
// origin; the token goes to the iframe by postMessage to that exact origin, never in a URL.
// Optional: data-open="true" opens the chat at once; data-label names the button.

(() => {
  const script = document.currentScript;
  if (!script) return;
  const widgetUrl = new URL("./", script.src);
  const widgetOrigin = widgetUrl.origin;
  const session = {
    type: "switchboard:session",
    conversationId: script.dataset.conversationId || "",
    visitorToken: script.dataset.visitorToken || "",
  };
  const chinese = (navigator.language || "").toLowerCase().startsWith("zh");
  const words = chinese
    ? { open: "联系客服", close: "关闭客服窗口", frame: "在线客服" }
    : { open: "Chat with us", close: "Close the chat", frame: "Customer service chat" };

  // One widget per page: a second tag (a new conversation) replaces the first.
  window.SwitchboardWidget?.remove();

  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.textContent = script.dataset.label || words.open;
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "switchboard-widget");
  Object.assign(launcher.style, {
    position: "fixed",
    right: "16px",
    bottom: "16px",
    zIndex: "2147483000",
    padding: "12px 18px",
    border: "0",
    borderRadius: "24px",
    background: "#1f5fbf",
    color: "#fff",
    font: "600 15px system-ui, sans-serif",
    boxShadow: "0 4px 14px rgba(0,0,0,.25)",
    cursor: "pointer",
  });

  const panel = document.createElement("div");
  panel.id = "switchboard-widget";
  panel.hidden = true;
  const closer = document.createElement("button");
  closer.type = "button";
  closer.textContent = "×";
  closer.setAttribute("aria-label", words.close);
  Object.assign(closer.style, {
    position: "absolute",
    top: "6px",
    right: "8px",
    width: "36px",
    height: "36px",
    border: "0",
    borderRadius: "18px",
    background: "rgba(0,0,0,.25)",
    color: "#fff",
    font: "24px/1 system-ui, sans-serif",
    cursor: "pointer",
  });
  const frame = document.createElement("iframe");
  frame.title = words.frame;
  frame.src = widgetUrl.href;
  Object.assign(frame.style, { width: "100%", height: "100%", border: "0", display: "block" });
  panel.append(frame, closer);

  // A phone's screen is the chat's; elsewhere it is a panel above the button.
  const phone = window.matchMedia("(max-width: 480px)");
  const fit = () => {
    Object.assign(
      panel.style,
      { position: "fixed", zIndex: "2147483001", background: "#fff", overflow: "hidden" },
      phone.matches
        ? { inset: "0", width: "100%", height: "100%", borderRadius: "0", boxShadow: "none" }
        : {
            inset: "auto 16px 76px auto",
            width: "380px",
            height: "min(600px, calc(100vh - 96px))",
            borderRadius: "12px",
            boxShadow: "0 8px 30px rgba(0,0,0,.3)",
          },
    );
  };
  fit();
  phone.addEventListener("change", fit);

  const label = launcher.textContent;
  const tell = (message) => frame.contentWindow?.postMessage(message, widgetOrigin);
  const show = (open) => {
    panel.hidden = !open;
    tell({ type: "switchboard:visibility", open }); // nothing is read while it is closed
    launcher.setAttribute("aria-expanded", String(open));
    launcher.hidden = open && phone.matches;
    if (!open) launcher.focus();
  };
  launcher.addEventListener("click", () => show(panel.hidden));
  closer.addEventListener("click", () => show(false));

  // The widget says it is ready; it gets the session, to its own origin only. It counts the
  // agent's messages that came while its panel was closed: the button shows them.
  const answer = (event) => {
    if (event.origin !== widgetOrigin || event.source !== frame.contentWindow) return;
    const data = event.data || {};
    if (data.type === "switchboard:ready") {
      tell({ type: "switchboard:visibility", open: !panel.hidden });
      if (session.visitorToken) tell(session);
    } else if (data.type === "switchboard:unread" && Number.isInteger(data.count)) {
      launcher.textContent = data.count > 0 ? `${label} (${data.count})` : label;
    }
  };
  window.addEventListener("message", answer);

  document.body.append(panel, launcher);
  if (script.dataset.open === "true") show(true);

  window.SwitchboardWidget = {
    open: () => show(true),
    close: () => show(false),
    remove() {
      window.removeEventListener("message", answer);
      phone.removeEventListener("change", fit);
      panel.remove();
      launcher.remove();
    },
  };
})();
