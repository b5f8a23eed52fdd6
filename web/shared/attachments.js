// Attachments in a page: files taken from the picker, a paste or a drop, uploaded with their
// progress, and shown as the API describes them (a photo's thumbnail that opens the whole
// photo, a video player, a PDF to download). The API's paths need a credential an <img> cannot
// send: each page asks for a ticket (POST /v1/stream-tickets) and puts it in the URL, asking
// again once it has expired. Only paths of this origin under /v1/conversations/ are ever used.

import { el } from "./dom.js";

/** The message types that carry an attachment: the attachment's kind is its message's type. */
export const ATTACHED_TYPES = ["image", "video", "file"];

// What the picker offers (the API decides what a file is from its bytes, whatever this says).
export const PICKER_ACCEPT = "image/jpeg,image/png,image/webp,image/gif,image/heic,video/mp4,video/webm,application/pdf";

/** `path` if it is a path of this origin's API under /v1/conversations/ (nothing to resolve,
 * no query, no other host), else null: what the network says is never used as any address. */
export function ownPath(path) {
  if (typeof path !== "string" || !path.startsWith("/v1/conversations/")) return null;
  let url;
  try {
    url = new URL(path, location.origin);
  } catch {
    return null;
  }
  return url.origin === location.origin && url.pathname === path ? path : null;
}

/** Tickets to an attachment's file and thumbnail (one opens both), kept until they expire. */
export class AttachmentTickets {
  constructor(api) {
    this.api = api;
    this.held = new Map(); // attachment path → {promise, until}
  }

  /** Whether a ticket for `path` is at hand and still good. */
  fresh(path) {
    const held = this.held.get(path);
    return Boolean(held && held.until > Date.now());
  }

  ticket(path) {
    const held = this.held.get(path);
    if (held && (held.until === null || held.until > Date.now())) return held.promise;
    const entry = { until: null };
    entry.promise = this.api.post("/v1/stream-tickets", { stream: path }).then(
      ({ body }) => {
        // Asked again a little before it runs out: a click then still opens.
        entry.until = Date.now() + Math.max(1, Number(body.expires_in) || 0) * 900;
        return body.ticket;
      },
      (error) => {
        this.held.delete(path);
        throw error;
      },
    );
    this.held.set(path, entry);
    return entry.promise;
  }

  /** Forget the ticket for `path` (the server refused it): the next one is asked anew. */
  forget(path) {
    this.held.delete(path);
  }

  /** `address` (the attachment's file or thumbnail) with a ticket for `path`. */
  async address(path, address) {
    return `${address}?ticket=${encodeURIComponent(await this.ticket(path))}`;
  }
}

/** A size in bytes as people read it. */
export function formatSize(bytes) {
  if (!(bytes >= 0)) return "";
  if (bytes < 1024 * 1024) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** Point `node`'s `attribute` at `address` with a ticket; when the address fails (the ticket
 * expired before a video played, say) a new ticket is asked, at most every ten seconds. */
function withTicket(node, attribute, path, address, tickets) {
  let askedAt = 0;
  const point = () => {
    askedAt = Date.now();
    tickets.address(path, address).then(
      (value) => node.setAttribute(attribute, value),
      () => {},
    );
  };
  node.addEventListener("error", () => {
    if (Date.now() - askedAt < 10000) return;
    tickets.forget(path);
    point();
  });
  point();
}

/** A thumbnail's size on the page: the photo's proportions, at most 240 px on its long side
 * (the stored thumbnail has 320: sharp on a phone's denser screen). */
function thumbnailSize({ width, height }) {
  if (!(width > 0 && height > 0)) return {};
  const scale = Math.min(1, 240 / Math.max(width, height));
  return { width: Math.round(width * scale), height: Math.round(height * scale) };
}

/**
 * What a message's attachment shows, or null when it is not one of ours. `words` holds the
 * page's texts: image, video, openImage, closeViewer, file(size).
 */
export function attachmentView(attachment, { tickets, words }) {
  const path = ownPath(attachment?.url);
  if (!path || !ATTACHED_TYPES.includes(attachment.kind)) return null;
  if (attachment.kind === "image") {
    const thumbnail = ownPath(attachment.thumbnail_url) ?? path;
    const image = el("img", { class: "attachment-thumbnail", alt: words.image, ...thumbnailSize(attachment) });
    withTicket(image, "src", path, thumbnail, tickets);
    return el(
      "button",
      {
        type: "button",
        class: "attachment-image",
        title: words.openImage,
        "aria-label": words.openImage,
        on: { click: () => openViewer(path, attachment, { tickets, words }) },
      },
      image,
    );
  }
  if (attachment.kind === "video") {
    const video = el("video", {
      class: "attachment-video",
      controls: true,
      preload: "metadata",
      "aria-label": words.video,
      ...thumbnailSize(attachment),
    });
    withTicket(video, "src", path, path, tickets);
    return video;
  }
  const link = el("a", { class: "attachment-file", download: "", rel: "noopener" }, words.file(formatSize(attachment.size)));
  const point = async () => link.setAttribute("href", await tickets.address(path, path));
  point().catch(() => {});
  link.addEventListener("click", (event) => {
    if (tickets.fresh(path)) return;
    // Its ticket has run out since: a new one, then the download.
    event.preventDefault();
    point().then(
      () => link.click(),
      () => {},
    );
  });
  return link;
}

/** The whole photo, over the page, with a fresh ticket; Escape or its button closes it. */
function openViewer(path, attachment, { tickets, words }) {
  let viewer = document.getElementById("attachment-viewer");
  if (!viewer) {
    viewer = el(
      "dialog",
      { id: "attachment-viewer", class: "viewer", "aria-label": words.image },
      el("button", { type: "button", class: "viewer-close", on: { click: () => viewer.close() } }, words.closeViewer),
      el("img", { class: "viewer-image", alt: words.image }),
    );
    // A click on the backdrop (outside the photo and the button) closes it too.
    viewer.addEventListener("click", (event) => {
      if (event.target === viewer) viewer.close();
    });
    document.body.append(viewer);
  }
  const image = viewer.querySelector("img");
  image.removeAttribute("src");
  for (const [name, value] of Object.entries({ width: attachment.width, height: attachment.height })) {
    if (value > 0) image.setAttribute(name, value);
    else image.removeAttribute(name);
  }
  viewer.showModal();
  tickets.address(path, path).then(
    (address) => image.setAttribute("src", address),
    () => viewer.close(),
  );
}

/**
 * The files a person hands the page: chosen with `picker` (an <input type=file>), pasted into
 * `composer`, or dropped onto `zone` (marked `dropping` while a file is held over it), each
 * batch handed to `onFiles(files)` while `accepting()` says so.
 */
export function takeFiles({ picker, composer, zone, onFiles, accepting = () => true }) {
  picker?.addEventListener("change", () => {
    const files = [...picker.files];
    picker.value = ""; // the same file can be chosen again
    if (files.length && accepting()) onFiles(files);
  });
  composer?.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (!files.length || !accepting()) return;
    event.preventDefault(); // the file, not its name as text
    onFiles(files);
  });
  if (!zone) return;
  const holdsFiles = (event) => accepting() && [...(event.dataTransfer?.types ?? [])].includes("Files");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      if (!holdsFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dropping");
    });
  }
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dropping");
  });
  zone.addEventListener("drop", (event) => {
    zone.classList.remove("dropping");
    if (!holdsFiles(event)) return;
    event.preventDefault();
    const files = [...event.dataTransfer.files];
    if (files.length) onFiles(files);
  });
}

/** A paperclip, drawn for an attach button (an emoji's look depends on the fonts at hand). */
export function paperclipIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "22");
  svg.setAttribute("height", "22");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute(
    "d",
    "M16.5 6.5v10a4.5 4.5 0 0 1-9 0V5a3 3 0 0 1 6 0v10.5a1.5 1.5 0 0 1-3 0V6.5",
  );
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.8");
  path.setAttribute("stroke-linecap", "round");
  svg.append(path);
  return svg;
}

let uploads = 0;

/**
 * Upload `files` to the conversation one after the other, each with a progress bar in `list`
 * while it goes: `taken(attachment)` for each the API took, in order; `refused(sentence)` for
 * each it did not (the API's reason for a file too large or of a kind it does not take).
 * `words`: uploading(name), refused(name, reason), uploadFailed(name).
 */
export async function uploadFiles(api, conversationId, files, { list, words, taken, refused }) {
  for (const file of files) {
    const id = `upload-${++uploads}`;
    const name = file.name || "";
    const bar = el("progress", { max: 100, value: 0, "aria-labelledby": id });
    const row = el("li", { class: "upload" }, el("span", { id }, words.uploading(name)), bar);
    list.append(row);
    try {
      const { body } = await api.upload(`/v1/conversations/${encodeURIComponent(conversationId)}/attachments`, file, (done) => {
        bar.value = Math.round(done * 100);
      });
      taken(body);
    } catch (error) {
      const reason = [409, 413, 415, 429].includes(error.status) && typeof error.detail === "string" ? error.detail : null;
      refused(reason ? words.refused(name, reason) : words.uploadFailed(name));
    } finally {
      row.remove();
    }
  }
}
