// The sign-in form both staff pages share: a token typed in, checked against the API, kept in
// this tab's sessionStorage (never in a URL); signing out forgets it.

import { api, ApiError, session } from "./api.js";
import { t } from "./i18n.js";

/**
 * Fill `view` (an empty <main>) with the form. `check` is the path a token must be able to
 * read (the page's first call); `onSignedIn()` runs once a token is kept.
 */
export function signInForm(view, { check, onSignedIn }) {
  const form = document.createElement("form");
  const heading = document.createElement("h2");
  heading.textContent = t("signInHeading");
  const help = document.createElement("p");
  help.textContent = t("signInHelp");
  const label = document.createElement("label");
  label.htmlFor = "token-input";
  label.textContent = t("token");
  const input = document.createElement("input");
  Object.assign(input, { id: "token-input", type: "password", autocomplete: "off", required: true, maxLength: 200 });
  const submit = document.createElement("button");
  submit.type = "submit";
  submit.textContent = t("signIn");
  const error = document.createElement("p");
  error.className = "error";
  error.setAttribute("role", "alert");
  form.append(heading, help, label, input, submit, error);
  view.replaceChildren(form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    try {
      await api("GET", check, undefined, token);
    } catch (failure) {
      error.textContent = refusal(failure);
      return;
    }
    session.signIn(token);
    input.value = "";
    await onSignedIn();
  });

  return {
    show(message = "") {
      view.hidden = false;
      error.textContent = message;
      input.focus();
    },
    hide() {
      view.hidden = true;
    },
  };
}

/** What a refused token is told. */
export function refusal(error) {
  return error instanceof ApiError && error.status === 403
    ? t("notAllowed")
    : t("signInFailed", { status: error?.status ?? "?" });
}
