// The playground's entry: sign-in, the header, and which page a path shows.

import "./styles.css";
import { Api, ApiError } from "./api";
import { type App, link, problem } from "./app";
import { forgetToken, storedToken, storeToken, takeTokenFromLink } from "./auth";
import { fill, h } from "./dom";
import { comparePage } from "./pages/compare";
import { historyPage } from "./pages/history";
import { modelPage } from "./pages/model";
import { modelsPage } from "./pages/models";
import { predictionPage } from "./pages/prediction";
import { signIn } from "./pages/signin";

const root = document.getElementById("app") as HTMLElement;
const base = (root.dataset.base ?? location.origin).replace(/\/$/, "");
const appRoot = new URL(document.baseURI).pathname;

let leaving: (() => void)[] = [];

/** The app's path of the current page: what follows its root. */
function route(): string {
  const path = location.pathname.startsWith(appRoot) ? location.pathname.slice(appRoot.length) : location.pathname;
  return `/${path}`;
}

async function page(app: App, path: string): Promise<HTMLElement> {
  let match: RegExpMatchArray | null;
  if (path === "/" || path === "") return modelsPage(app);
  if ((match = path.match(/^\/models\/([^/]+\/[^/]+)(?:\/versions\/([^/]+))?$/))) return modelPage(app, match[1], match[2] ?? null);
  if (path === "/predictions") return historyPage(app);
  if ((match = path.match(/^\/predictions\/([^/]+)$/))) return predictionPage(app, match[1], undefined);
  if (path === "/compare") return comparePage(app);
  return h("p", { class: "error", role: "alert" }, `There is no page at ${path}.`);
}

function header(app: App | null): HTMLElement {
  const nav = app
    ? h(
        "nav",
        { "aria-label": "Main" },
        link(app, "/", "Models"),
        link(app, "/predictions", "History"),
        link(app, "/compare", "Compare"),
        h(
          "button",
          {
            type: "button",
            class: "small",
            onclick: () => {
              forgetToken();
              location.assign(appRoot);
            },
          },
          "Sign out",
        ),
      )
    : null;
  return h("header", { class: "top" }, h("a", { class: "brand", href: appRoot }, "Overture"), nav);
}

async function show(app: App | null, content: () => Promise<HTMLElement>): Promise<void> {
  for (const cleanup of leaving.splice(0)) cleanup();
  const main = h("main", { id: "main", tabindex: -1 }, h("p", { class: "meta", "aria-busy": "true" }, "Loading…"));
  fill(root, header(app), main);
  try {
    fill(main, await content());
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401 && app) {
      forgetToken();
      start("The server refused the token this browser kept. Sign in again.");
      return;
    }
    fill(main, problem(exc));
  }
  document.title = `${main.querySelector("h1")?.textContent ?? "Overture"} · Overture`;
}

function start(refused: string | null = null): void {
  // A shared link (`/p/<id>?expires=…&signature=…`) plays without any token.
  const shared = location.pathname.match(/\/p\/([^/]+)$/);
  if (shared && location.search.includes("signature=")) {
    const api = new Api(base, null);
    const app: App = { api, base, root: appRoot, navigate: (p) => location.assign(`${appRoot}${p.slice(1)}`), onLeave: (f) => leaving.push(f) };
    void show(null, () => predictionPage(app, decodeURIComponent(shared[1]), location.search));
    return;
  }
  const fromLink = takeTokenFromLink();
  const kept = storedToken();
  // Someone else's link must not quietly sign this browser in as them: a different token is asked about.
  const replace =
    fromLink !== null &&
    (kept === null ||
      kept === fromLink ||
      window.confirm(
        "This link signs this browser in with a different token than the one it is signed in with. " +
          "Sign out of the current one and use the link's token?",
      ));
  if (replace) storeToken(fromLink);
  const token = storedToken();
  if (!token) {
    fill(root, header(null), h("main", { id: "main" }, signIn(base, refused, () => start())));
    return;
  }
  const api = new Api(base, token);
  const app: App = {
    api,
    base,
    root: appRoot,
    navigate(path: string) {
      history.pushState(null, "", `${appRoot}${path.replace(/^\//, "")}`);
      void show(app, () => page(app, route()));
      window.scrollTo(0, 0);
    },
    onLeave: (cleanup) => leaving.push(cleanup),
  };
  window.onpopstate = () => void show(app, () => page(app, route()));
  void show(app, () => page(app, route()));
}

start();
