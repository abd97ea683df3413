// Every prediction of this token, newest first, filterable by model and status, a page at a time.

import { type Json, type Prediction, isAudio, urls } from "../api";
import { type App, link } from "../app";
import { append, h, seconds } from "../dom";
import { miniWave } from "../player";

const STATUSES = ["starting", "processing", "succeeded", "failed", "canceled"];

/** The prompt-like input of a prediction, for the list. */
export function promptOf(input: Record<string, Json>): string {
  const value = input.prompt ?? input.prompt_a ?? input.text ?? "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

export async function historyPage(app: App): Promise<HTMLElement> {
  const query = new URLSearchParams(location.search);
  const filters = { model: query.get("model") ?? "", status: query.get("status") ?? "" };
  const models = await app.api.models();
  const modelSelect = h(
    "select",
    { id: "filter-model", name: "model" },
    h("option", { value: "" }, "All models"),
    models.results.map((m) => h("option", { value: `${m.owner}/${m.name}` }, `${m.owner}/${m.name}`)),
  );
  const statusSelect = h(
    "select",
    { id: "filter-status", name: "status" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  modelSelect.value = filters.model;
  statusSelect.value = filters.status;
  const body = h("tbody", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const empty = h("p", { class: "meta", hidden: true }, "No predictions match.");
  let next: string | null = null;

  const load = async () => {
    more.disabled = true;
    const page = await app.api.predictions(filters, next ?? undefined);
    append(body, page.results.map((p) => row(app, p)));
    next = page.next;
    more.hidden = next === null;
    more.disabled = false;
    empty.hidden = body.childElementCount > 0;
  };
  more.addEventListener("click", () => void load());
  const apply = () => {
    const params = new URLSearchParams();
    if (modelSelect.value) params.set("model", modelSelect.value);
    if (statusSelect.value) params.set("status", statusSelect.value);
    app.navigate(`/predictions${params.size ? `?${params}` : ""}`);
  };
  modelSelect.addEventListener("change", apply);
  statusSelect.addEventListener("change", apply);
  await load();

  return h(
    "section",
    { "aria-labelledby": "history-title" },
    h("h1", { id: "history-title" }, "History"),
    h(
      "div",
      { class: "filters", role: "search" },
      h("label", { for: "filter-model" }, "Model"),
      modelSelect,
      h("label", { for: "filter-status" }, "Status"),
      statusSelect,
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "history" },
        h(
          "thead",
          {},
          h("tr", {}, ["Created", "Model", "Prompt", "Status", "Duration", "Audio"].map((t) => h("th", { scope: "col" }, t))),
        ),
        body,
      ),
    ),
    empty,
    more,
  );
}

function row(app: App, p: Prediction): HTMLElement {
  const audio = urls(p.signed_output).filter(isAudio)[0];
  const prompt = promptOf(p.input);
  return h(
    "tr",
    { "data-prediction": p.id, "data-status": p.status, "data-model": p.model },
    h("td", {}, link(app, `/predictions/${p.id}`, new Date(p.created_at).toLocaleString())),
    h("td", {}, p.model),
    h("td", { class: "prompt" }, prompt),
    h("td", {}, h("span", { class: `status status-${p.status}` }, p.status)),
    h("td", {}, seconds(p.metrics?.predict_time)),
    h("td", {}, audio ? miniWave(audio, `Waveform of ${prompt || p.id}`) : ""),
  );
}
