// A model version's input form, generated from its OpenAPI schema (components.schemas.Input) the
// way Cog writes it: fields in `x-order`, enums as `allOf: [{$ref}]`, files as `format: uri`.

import { type Api, type Json } from "./api";
import { h, newId } from "./dom";
import { Recording } from "./recorder";

export interface Field {
  name: string;
  title: string;
  description: string;
  type: "string" | "integer" | "number" | "boolean" | "file";
  choices: Json[] | null;
  minimum?: number;
  maximum?: number;
  default: Json | undefined;
  required: boolean;
}

type Schema = Record<string, Json>;

function resolve(root: Schema, node: Schema): Schema {
  // Cog puts an enum in a component of its own and points at it through allOf.
  const refs = Array.isArray(node.allOf) ? (node.allOf as Schema[]) : [];
  let merged: Schema = { ...node };
  for (const part of refs) {
    const ref = typeof part.$ref === "string" ? part.$ref : null;
    const target = ref ? lookup(root, ref) : part;
    merged = { ...target, ...merged };
  }
  return merged;
}

function lookup(root: Schema, ref: string): Schema {
  let node: Json = root;
  for (const key of ref.replace(/^#\//, "").split("/")) {
    node = node && typeof node === "object" && !Array.isArray(node) ? (node as Schema)[key] : null;
  }
  return (node ?? {}) as Schema;
}

/** The version's inputs, in `x-order`. */
export function fields(openapi: Schema): Field[] {
  const input = lookup(openapi, "#/components/schemas/Input");
  const properties = (input.properties ?? {}) as Record<string, Schema>;
  const required = new Set((input.required ?? []) as string[]);
  return Object.entries(properties)
    .map(([name, raw]) => {
      const spec = resolve(openapi, raw);
      const type = spec.format === "uri" ? "file" : ((spec.type as Field["type"] | undefined) ?? "string");
      return {
        name,
        title: String(spec.title ?? name),
        description: String(spec.description ?? ""),
        type,
        choices: Array.isArray(spec.enum) ? spec.enum : null,
        minimum: typeof spec.minimum === "number" ? spec.minimum : undefined,
        maximum: typeof spec.maximum === "number" ? spec.maximum : undefined,
        default: spec.default,
        required: required.has(name),
        order: typeof spec["x-order"] === "number" ? spec["x-order"] : Number.MAX_SAFE_INTEGER,
      };
    })
    .sort((a, b) => a.order - b.order)
    .map(({ order: _order, ...field }) => field);
}

/** One field's control, and how to read and set its value. */
interface Control {
  field: Field;
  row: HTMLElement;
  error: HTMLElement;
  focusable: HTMLElement;
  /** Without an API (code to show), a file not yet sent is a placeholder, not an upload. */
  read(api: Api | null): Promise<Json | undefined>;
  set(value: Json | undefined): void;
}

export class InputForm {
  readonly element: HTMLFormElement;
  private controls = new Map<string, Control>();

  constructor(
    readonly schema: Field[],
    onSubmit: () => void,
    submitLabel: string,
    extra: Node[] = [],
  ) {
    for (const field of schema) this.controls.set(field.name, control(field));
    this.element = h(
      "form",
      { class: "input-form", novalidate: true, "aria-label": "Inputs" },
      [...this.controls.values()].map((c) => c.row),
      h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, submitLabel), extra),
    );
    // The API checks the values, and its 422 names the field: the browser's own checks stay out of the way.
    this.element.addEventListener("submit", (event) => {
      event.preventDefault();
      onSubmit();
    });
  }

  /** The values to send: those that differ from the schema's defaults, as a client's code would
   * give them (and an alias such as Stable Audio's `duration` never meets its twin's default);
   * files are uploaded first. */
  values(api: Api): Promise<Record<string, Json>> {
    return this.collect(api);
  }

  /** The values as code would give them, uploading nothing: a file not yet sent is a placeholder. */
  draft(): Promise<Record<string, Json>> {
    return this.collect(null);
  }

  private async collect(api: Api | null): Promise<Record<string, Json>> {
    const input: Record<string, Json> = {};
    for (const [name, c] of this.controls) {
      const value = await c.read(api);
      if (value !== undefined && JSON.stringify(value) !== JSON.stringify(c.field.default)) input[name] = value;
    }
    return input;
  }

  /** Fill the form from a past prediction's input ("Tweak"). */
  fill(input: Record<string, Json>): void {
    for (const [name, c] of this.controls) c.set(name in input ? input[name] : c.field.default);
  }

  /** Show each invalid field's message beside it; what names no field is returned. */
  showErrors(errors: { field: string; message: string }[]): string[] {
    this.clearErrors();
    const unmatched: string[] = [];
    let first: Control | undefined;
    for (const { field, message } of errors) {
      const c = this.controls.get(field.replace(/^input\./, ""));
      if (!c) {
        unmatched.push(`${field}: ${message}`);
        continue;
      }
      c.error.textContent = message;
      c.row.classList.add("invalid");
      c.focusable.setAttribute("aria-invalid", "true");
      first ??= c;
    }
    first?.focusable.focus();
    return unmatched;
  }

  clearErrors(): void {
    for (const c of this.controls.values()) {
      c.error.textContent = "";
      c.row.classList.remove("invalid");
      c.focusable.removeAttribute("aria-invalid");
    }
  }
}

function describe(field: Field): string {
  const parts = [field.description];
  if (field.minimum !== undefined || field.maximum !== undefined) {
    parts.push(`Range ${field.minimum ?? "−∞"} to ${field.maximum ?? "∞"}.`);
  }
  if (field.default !== undefined && field.default !== null) parts.push(`Default: ${JSON.stringify(field.default)}.`);
  return parts.filter(Boolean).join(" ");
}

function control(field: Field): Control {
  const id = newId(`in-${field.name}`);
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const error = h("p", { class: "field-error", id: errorId, "data-error-for": field.name, "aria-live": "polite" });
  const hint = h("p", { class: "hint", id: hintId }, describe(field));
  const label = h(
    "label",
    { for: id },
    h("code", {}, field.name),
    field.required ? h("span", { class: "required" }, " (required)") : null,
    field.type !== "file" && field.choices === null ? h("span", { class: "type" }, ` ${field.type}`) : null,
  );
  const common = { id, name: field.name, "aria-describedby": `${hintId} ${errorId}` };
  const parts = { field, error, hint, label, common };
  if (field.type === "file") return fileControl(parts);
  let input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  let read: () => Json | undefined;
  let set: (value: Json | undefined) => void;
  if (field.choices) {
    const select = h(
      "select",
      common,
      field.required || field.default !== undefined ? null : h("option", { value: "" }, "(none)"),
      field.choices.map((choice, i) => h("option", { value: String(i) }, String(choice))),
    );
    const choices = field.choices;
    read = () => (select.value === "" ? undefined : choices[Number(select.value)]);
    set = (value) => {
      const index = choices.findIndex((choice) => choice === value);
      select.value = index < 0 ? "" : String(index);
    };
    input = select;
  } else if (field.type === "boolean") {
    const box = h("input", { ...common, type: "checkbox" });
    read = () => box.checked;
    set = (value) => {
      box.checked = value === true;
    };
    input = box;
  } else if (field.type === "integer" || field.type === "number") {
    const number = h("input", {
      ...common,
      type: "number",
      inputmode: field.type === "integer" ? "numeric" : "decimal",
      step: field.type === "integer" ? 1 : "any",
      min: field.minimum,
      max: field.maximum,
      placeholder: field.default === null || field.default === undefined ? "(none)" : null,
    });
    read = () => (number.value.trim() === "" ? undefined : Number(number.value));
    set = (value) => {
      number.value = value === null || value === undefined ? "" : String(value);
    };
    input = number;
  } else {
    const long = /prompt|text|lyrics/.test(field.name);
    const text = long ? h("textarea", { ...common, rows: 3 }) : h("input", { ...common, type: "text" });
    read = () => (text.value === "" ? undefined : text.value);
    set = (value) => {
      text.value = value === null || value === undefined ? "" : String(value);
    };
    input = text;
  }
  set(field.default);
  const row = h("div", { class: `field field-${field.type}`, "data-field": field.name }, label, input, hint, error);
  return { field, row, error, focusable: input, read: async () => read(), set };
}

interface Parts {
  field: Field;
  error: HTMLElement;
  hint: HTMLElement;
  label: HTMLElement;
  common: Record<string, string>;
}

/** A file: picked, dropped, recorded from the microphone, or a URL (a past prediction's). */
function fileControl({ field, error, hint, label, common }: Parts): Control {
  let chosen: Blob | string | null = null;
  let chosenName = "";
  const picker = h("input", { ...common, type: "file", accept: "audio/*" });
  const status = h("span", { class: "file-status", "aria-live": "polite" }, "No file");
  const preview = h("audio", { controls: true, class: "preview", hidden: true });
  const clear = h("button", { type: "button", class: "small", hidden: true }, "Remove");
  const record = h("button", { type: "button", class: "small" }, "Record from microphone");
  let previewUrl: string | null = null;
  const show = () => {
    status.textContent = chosen === null ? "No file" : typeof chosen === "string" ? chosen : chosenName;
    clear.hidden = chosen === null;
    preview.hidden = !(chosen instanceof Blob);
    // The last preview's blob is let go: a page that picks many files does not keep them all.
    if (previewUrl !== null) URL.revokeObjectURL(previewUrl);
    previewUrl = chosen instanceof Blob ? URL.createObjectURL(chosen) : null;
    if (previewUrl !== null) preview.src = previewUrl;
    else preview.removeAttribute("src");
  };
  const choose = (value: Blob | string | null, name = "") => {
    chosen = value;
    chosenName = name;
    show();
  };
  picker.addEventListener("change", () => {
    const file = picker.files?.[0];
    if (file) choose(file, file.name);
  });
  clear.addEventListener("click", () => {
    picker.value = "";
    choose(null);
  });
  let recording: Recording | null = null;
  record.addEventListener("click", async () => {
    error.textContent = "";
    try {
      if (recording === null) {
        recording = await Recording.start();
        record.textContent = "Stop recording";
        record.setAttribute("aria-pressed", "true");
        status.textContent = "Recording…";
      } else {
        const taken = recording;
        recording = null;
        record.textContent = "Record from microphone";
        record.setAttribute("aria-pressed", "false");
        choose(await taken.stop(), "recording.wav");
      }
    } catch (exc) {
      recording = null;
      record.textContent = "Record from microphone";
      error.textContent = `The microphone could not record: ${(exc as Error).message}`;
    }
  });
  const zone = h(
    "div",
    { class: "drop-zone", "data-drop": field.name },
    picker,
    h("span", { class: "drop-note" }, "or drop a file here"),
    record,
    clear,
    status,
    preview,
  );
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer?.files[0];
    if (file) choose(file, file.name);
  });
  const set = (value: Json | undefined) => choose(typeof value === "string" ? value : null);
  set(field.default);
  const row = h("div", { class: "field field-file", "data-field": field.name }, label, zone, hint, error);
  return {
    field,
    row,
    error,
    focusable: picker,
    read: async (api) => {
      if (chosen instanceof Blob) {
        if (api === null) return `<the URL of ${chosenName || "input.wav"} once uploaded>`;
        // Uploaded once, through the Files API as the clients do; its URL is the input.
        chosen = await api.upload(chosen, chosenName || "input.wav");
        show();
      }
      return chosen ?? undefined;
    },
    set,
  };
}
