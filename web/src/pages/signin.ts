// The page for a visitor without a token, or with one the server refused.

import { Api, ApiError } from "../api";
import { storeToken } from "../auth";
import { h } from "../dom";

export function signIn(base: string, refused: string | null, onSignedIn: () => void): HTMLElement {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const message = h("p", { class: "error", role: "alert", "data-testid": "signin-error" }, refused ?? "");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Overture"),
    h(
      "p",
      {},
      "Open the link that ",
      h("code", {}, "overture serve"),
      " printed (",
      h("code", {}, `${base}/#token=…`),
      "), or paste the server's API token. It is kept in this browser, never in a URL.",
    ),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    try {
      await new Api(base, token).account();
      storeToken(token);
      onSignedIn();
    } catch (exc) {
      message.textContent =
        exc instanceof ApiError && exc.status === 401 ? "The server refused that token." : String((exc as Error).message);
    }
  });
  return form;
}
