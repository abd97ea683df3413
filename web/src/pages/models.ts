// The home page: every model the server offers.

import { type App, link } from "../app";
import { h } from "../dom";

export async function modelsPage(app: App): Promise<HTMLElement> {
  const page = await app.api.models();
  return h(
    "section",
    { "aria-labelledby": "models-title" },
    h("h1", { id: "models-title" }, "Models"),
    h(
      "p",
      { class: "lead" },
      "Pick a model, fill in its form and press Run. ",
      link(app, "/compare", "Compare"),
      " sends one prompt to several models at once; ",
      link(app, "/predictions", "History"),
      " lists what you made.",
    ),
    h(
      "ul",
      { class: "cards" },
      page.results.map((model) =>
        h(
          "li",
          { class: "card" },
          h("h2", {}, link(app, `/models/${model.owner}/${model.name}`, `${model.owner}/${model.name}`)),
          h("p", {}, model.description ?? ""),
          h("p", { class: "meta" }, `${model.run_count} runs`),
        ),
      ),
    ),
  );
}
