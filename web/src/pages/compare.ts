// One prompt sent to several models at once, played side by side with each one's time on this
// machine: the seed document's comparison table, measured live.

import { type Json, type Model, weights } from "../api";
import { type App, problem } from "../app";
import { fill, h, newId } from "../dom";
import { type Field, fields } from "../form";
import { RunView } from "../run";

interface Entry {
  label: string;
  ref: string;
  /** The fixed inputs that pick it: MusicGen's size is its `model_version`. */
  fixed: Record<string, Json>;
  prompt: Field;
  duration: Field | undefined;
  /** Its weights are on this machine: a run of one without them fails, saying how to get them. */
  ready: boolean;
}

/** Which of a model's variants have their weights here (`x-overture-weights`); all, for a model with none. */
function ready(model: Model): (variant: Json | undefined) => boolean {
  const listed = weights(model);
  if (!listed.length) return () => true;
  return (variant) => listed.some((w) => w.ready && (variant === undefined || w.model_version === variant));
}

function entries(models: Model[]): Entry[] {
  return models.flatMap((model) => {
    const has = ready(model);
    const schema = model.latest_version ? fields(model.latest_version.openapi_schema) : [];
    const prompt = schema.find((f) => f.name === "prompt" || f.name === "prompt_a");
    if (!prompt || schema.some((f) => f.required && f.name !== prompt.name)) return [];
    const duration = schema.find((f) => f.name === "duration" && f.type !== "file") ?? schema.find((f) => f.name === "seconds_total");
    const ref = `${model.owner}/${model.name}`;
    const variants = schema.find((f) => f.name === "model_version" && f.choices);
    if (!variants?.choices) return [{ label: ref, ref, fixed: {}, prompt, duration, ready: has(undefined) }];
    return variants.choices.map((choice) => ({
      label: `${ref} (${String(choice)})`,
      ref,
      fixed: { model_version: choice },
      prompt,
      duration,
      ready: has(choice),
    }));
  });
}

function clamp(value: number, field: Field): number {
  const low = field.minimum ?? -Infinity;
  const high = field.maximum ?? Infinity;
  const clamped = Math.min(high, Math.max(low, value));
  return field.type === "integer" ? Math.round(clamped) : clamped;
}

export async function comparePage(app: App): Promise<HTMLElement> {
  // Each model's own record says which weights are here; the list leaves that out.
  const page = await app.api.models();
  const list = entries(await Promise.all(page.results.map((m) => app.api.model(`${m.owner}/${m.name}`))));
  const prompt = h("textarea", { id: "compare-prompt", name: "prompt", rows: 2, required: true }, "calm lo-fi piano with soft drums");
  const duration = h("input", { id: "compare-duration", name: "duration", type: "number", min: 1, max: 30, step: 1, value: 4 });
  const boxes = list.map((entry) => {
    const id = newId("cmp");
    const box = h("input", { type: "checkbox", id, value: entry.label });
    const missing = entry.ready ? null : h("span", { class: "meta" }, " (weights not here)");
    return { entry, box, row: h("li", {}, box, h("label", { for: id }, " ", entry.label), missing) };
  });
  const results = h("div", { class: "compare-grid", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const views: RunView[] = [];
  // Runs created after the visitor left (their requests were on the way) are not shown or polled.
  let left = false;
  app.onLeave(() => {
    left = true;
    views.forEach((v) => v.close());
  });

  const form = h(
    "form",
    { class: "compare-form", "aria-labelledby": "compare-title", novalidate: true },
    h("label", { for: "compare-prompt" }, "Prompt"),
    prompt,
    h("label", { for: "compare-duration" }, "Duration (seconds, where the model takes one)"),
    duration,
    h("fieldset", {}, h("legend", {}, "Models"), h("ul", { class: "checks" }, boxes.map((b) => b.row))),
    h("button", { type: "submit", class: "primary" }, "Run all"),
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = boxes.filter((b) => b.box.checked).map((b) => b.entry);
    error.hidden = chosen.length > 0;
    error.textContent = "Pick at least one model.";
    views.splice(0).forEach((v) => v.close());
    fill(results, chosen.map((entry) => card(app, entry, prompt.value, Number(duration.value), views, () => left)));
  });

  return h(
    "section",
    { "aria-labelledby": "compare-title" },
    h("h1", { id: "compare-title" }, "Compare"),
    h("p", { class: "lead" }, "Send one prompt to several models at once, and hear each with its time on this machine."),
    form,
    results,
  );
}

function card(
  app: App,
  entry: Entry,
  prompt: string,
  duration: number,
  views: RunView[],
  left: () => boolean,
): HTMLElement {
  const body = h("div", {}, h("p", { class: "meta" }, "Starting…"));
  const timeNote = h("p", { class: "compare-time", "data-testid": "compare-time" });
  const input: Record<string, Json> = { ...entry.fixed, [entry.prompt.name]: prompt };
  if (entry.duration && Number.isFinite(duration)) input[entry.duration.name] = clamp(duration, entry.duration);
  void (async () => {
    try {
      const prediction = await app.api.create(entry.ref, null, input, false);
      if (left()) return;
      const view = new RunView(app.api, prediction, {
        live: false,
        foldLogs: true,
        onDone: (done) => {
          const time = done.metrics?.predict_time;
          timeNote.textContent = time === undefined ? "" : `${time.toFixed(2)} s on this machine`;
        },
      });
      views.push(view);
      fill(body, view.element);
    } catch (exc) {
      fill(body, problem(exc));
    }
  })();
  return h("article", { class: "compare-card", "data-entry": entry.label }, h("h2", {}, entry.label), timeNote, body);
}
