// What every page gets: the API, and moving between pages without reloading.

import { type Api, ApiError } from "./api";
import { h } from "./dom";

export interface App {
  api: Api;
  /** The server's base URL, as the clients want it (`REPLICATE_BASE_URL`). */
  base: string;
  /** The path of the app's root: `/`, or `/prefix/` behind a proxy. */
  root: string;
  navigate(path: string): void;
  /** Pages stop their polling and streams here when the visitor leaves them. */
  onLeave(cleanup: () => void): void;
}

/** A link inside the app: followed without a reload, and a real link for new tabs. */
export function link(app: App, path: string, ...text: (Node | string)[]): HTMLAnchorElement {
  const a = h("a", { href: `${app.root}${path.replace(/^\//, "")}` }, ...text);
  a.addEventListener("click", (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    app.navigate(path);
  });
  return a;
}

/** An error in words, with what to do about it. */
export function problem(exc: unknown): HTMLElement {
  const text =
    exc instanceof ApiError
      ? exc.status === 401
        ? `The server refused the token: ${exc.message}. Sign in again with the link \`overture serve\` printed.`
        : exc.message
      : String(exc);
  return h("p", { class: "error", role: "alert" }, text);
}
