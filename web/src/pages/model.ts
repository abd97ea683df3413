// A model's page: its description, the form built from the version's schema, Run, and the same
// input as code (the API tab).

import { type Json, type Model, type Prediction, ApiError, weights } from "../api";
import { type App, link, problem } from "../app";
import { fill, h } from "../dom";
import { fields, InputForm } from "../form";
import { audioContext } from "../player";
import { RunView } from "../run";
import { snippets } from "../snippets";

/** `/models/<owner>/<name>[/versions/<id>]`; `?tweak=<prediction id>` fills the form from one. */
export async function modelPage(app: App, ref: string, versionId: string | null): Promise<HTMLElement> {
  const model = await app.api.model(ref);
  const version = versionId ? await app.api.version(ref, versionId) : model.latest_version;
  if (!version) throw new Error(`${ref} has no version to run.`);
  const schema = fields(version.openapi_schema);
  const runArea = h("div", { class: "run-area", "aria-live": "polite" });
  const formError = h("p", { class: "error", role: "alert", hidden: true, "data-testid": "form-error" });
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  let current: RunView | null = null;
  // A run created after the visitor left (its request was on the way) must not start polling.
  let left = false;
  app.onLeave(() => {
    left = true;
    current?.close();
  });

  const form: InputForm = new InputForm(schema, () => void run(), "Run", [
    h("label", { class: "inline", for: "live" }, live, " Play as it is made (stream)"),
  ]);
  const tweak = new URLSearchParams(location.search).get("tweak");
  if (tweak) form.fill((await app.api.prediction(tweak)).input);

  async function run(): Promise<void> {
    formError.hidden = true;
    form.clearErrors();
    // Made on the click: browsers let a page play sound only after a gesture.
    if (live.checked) audioContext();
    let prediction: Prediction;
    try {
      const input = await form.values(app.api);
      prediction = await app.api.create(ref, versionId, input, live.checked);
    } catch (exc) {
      const unmatched = exc instanceof ApiError ? form.showErrors(exc.fields) : [];
      if (!(exc instanceof ApiError) || exc.fields.length === 0 || unmatched.length) {
        formError.hidden = false;
        formError.textContent = unmatched.length ? unmatched.join("\n") : (exc as Error).message;
      }
      return;
    }
    if (left) return;
    current?.close();
    current = new RunView(app.api, prediction, { live: live.checked });
    fill(
      runArea,
      current.element,
      h("p", { class: "meta" }, link(app, `/predictions/${prediction.id}`, "Open this run's page")),
    );
  }

  const apiTab = h("div", { class: "api-tab", id: "panel-api", role: "tabpanel", "aria-labelledby": "tab-api", hidden: true });
  const formTab = h(
    "div",
    { id: "panel-form", role: "tabpanel", "aria-labelledby": "tab-form" },
    form.element,
    formError,
  );
  const showCode = async () => {
    try {
      fill(apiTab, codeBlocks(app, ref, version.id, await form.draft()));
    } catch (exc) {
      fill(apiTab, problem(exc));
    }
  };

  return h(
    "section",
    { class: "model-page", "aria-labelledby": "model-title" },
    h("h1", { id: "model-title" }, ref),
    h("p", { class: "lead", "data-testid": "description" }, model.description ?? ""),
    weightsNote(model),
    h("p", { class: "meta" }, "Version ", h("code", { "data-testid": "version" }, version.id)),
    h(
      "div",
      { class: "columns" },
      h(
        "div",
        { class: "column" },
        tabs([
          { id: "form", label: "Form", panel: formTab },
          { id: "api", label: "API", panel: apiTab, onShow: showCode },
        ]),
        formTab,
        apiTab,
      ),
      h("div", { class: "column" }, runArea),
    ),
  );
}

function codeBlocks(app: App, ref: string, version: string, input: Record<string, Json>): HTMLElement[] {
  return snippets(app.base, ref, version, input).map(({ language, code }) => {
    const pre = h("pre", { class: "code", "data-language": language, tabindex: 0 }, h("code", {}, code));
    const copy = h("button", { type: "button", class: "small" }, `Copy ${language}`);
    copy.addEventListener("click", () => void navigator.clipboard?.writeText(code));
    return h("div", { class: "snippet" }, h("h3", {}, language, " ", copy), pre);
  });
}

function weightsNote(model: Model): HTMLElement | null {
  const missing = weights(model).filter((w) => !w.ready);
  if (!missing.length) return null;
  return h(
    "div",
    { class: "note", role: "note" },
    h("p", {}, "Some weights are not on this machine yet; a run of them fails saying how to get them:"),
    h(
      "ul",
      {},
      missing.map((w) =>
        h("li", {}, h("code", {}, w.model_version), w.reason ? `: ${w.reason}` : ": run `overture pull` to fetch it"),
      ),
    ),
  );
}

interface Tab {
  id: string;
  label: string;
  panel: HTMLElement;
  onShow?: () => void | Promise<void>;
}

/** ARIA tabs: arrow keys move between them, as a keyboard user expects. */
function tabs(list: Tab[]): HTMLElement {
  const buttons = list.map((tab, i) =>
    h(
      "button",
      {
        type: "button",
        role: "tab",
        id: `tab-${tab.id}`,
        "aria-controls": `panel-${tab.id}`,
        "aria-selected": i === 0 ? "true" : "false",
        tabindex: i === 0 ? 0 : -1,
      },
      tab.label,
    ),
  );
  const select = (index: number) => {
    list.forEach((tab, i) => {
      tab.panel.hidden = i !== index;
      buttons[i].setAttribute("aria-selected", i === index ? "true" : "false");
      buttons[i].tabIndex = i === index ? 0 : -1;
    });
    buttons[index].focus();
    void list[index].onShow?.();
  };
  buttons.forEach((button, i) => {
    button.addEventListener("click", () => select(i));
    button.addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight") select((i + 1) % list.length);
      if (event.key === "ArrowLeft") select((i - 1 + list.length) % list.length);
    });
  });
  return h("div", { class: "tabs", role: "tablist", "aria-label": "Form or code" }, buttons);
}

