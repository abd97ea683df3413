// One past prediction: its inputs, logs, output and timings; Tweak and Share. Opened with the
// token from History, or by anyone through its signed link (`urls.web`, what Share gives).

import { type App, link } from "../app";
import { h } from "../dom";
import { RunView } from "../run";
import { promptOf } from "./history";

export async function predictionPage(app: App, id: string, signed: string | undefined): Promise<HTMLElement> {
  let left = false;
  let view: RunView | null = null;
  app.onLeave(() => {
    left = true;
    view?.close();
  });
  const prediction = await app.api.prediction(id, signed);
  view = new RunView(app.api, prediction, { live: false, query: signed });
  // Left while it was read: the page is not shown, and its run must not poll.
  if (left) view.close();
  const inputs = h(
    "table",
    { class: "inputs", "aria-label": "Inputs" },
    h(
      "tbody",
      {},
      Object.entries(prediction.input).map(([name, value]) =>
        h("tr", {}, h("th", { scope: "row" }, h("code", {}, name)), h("td", {}, JSON.stringify(value))),
      ),
    ),
  );
  const share = h("input", { id: "share-link", type: "text", readonly: true, value: prediction.urls.web });
  const copy = h("button", { type: "button" }, "Copy link");
  copy.addEventListener("click", () => {
    share.select();
    void navigator.clipboard?.writeText(share.value);
  });
  const times = [
    ["Created", prediction.created_at],
    ["Started", prediction.started_at],
    ["Completed", prediction.completed_at],
  ].filter(([, v]) => v);
  return h(
    "section",
    { class: "prediction-page", "aria-labelledby": "prediction-title" },
    h("h1", { id: "prediction-title" }, promptOf(prediction.input) || `Prediction ${prediction.id}`),
    h(
      "p",
      { class: "meta" },
      signed === undefined ? link(app, `/models/${prediction.model}`, prediction.model) : prediction.model,
      ` · ${prediction.id}`,
    ),
    signed === undefined
      ? h(
          "div",
          { class: "actions" },
          link(app, `/models/${prediction.model}?tweak=${encodeURIComponent(prediction.id)}`, "Tweak"),
          h(
            "div",
            { class: "share" },
            h("label", { for: "share-link" }, "Share (plays without the token, until the link expires)"),
            share,
            copy,
          ),
        )
      : null,
    view.element,
    h("h2", {}, "Inputs"),
    inputs,
    h("h2", {}, "Timings"),
    h("dl", { class: "timings" }, times.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, new Date(v as string).toLocaleString())])),
  );
}
