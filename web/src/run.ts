// One prediction as it runs and after: status, progress, logs, the streamed chunks playing live,
// the output in players, downloads, its time, and Cancel.

import { type Api, ApiError, fileName, isAudio, isImage, type Json, type Prediction, TERMINAL, urls } from "./api";
import { fill, h, seconds } from "./dom";
import { audioContext, LiveStream, player } from "./player";

const PROGRESS = /^\s*(\d+)%\|/gm;
const POLL_MS = 400;

export interface RunOptions {
  /** Play the stream's chunks as they come (a run started here, with `stream: true`). */
  live: boolean;
  /** A shared page's signature: read without the token. */
  query?: string;
  /** Show the logs folded (Compare, where several runs sit side by side). */
  foldLogs?: boolean;
  onDone?: (prediction: Prediction) => void;
}

export class RunView {
  readonly element: HTMLElement;
  private status = h("span", { class: "status", "data-testid": "status", role: "status" });
  private time = h("span", { class: "time", "data-testid": "time" });
  private cancel = h("button", { type: "button", class: "danger", hidden: true }, "Cancel");
  private progress = h("progress", { max: 100, value: 0, "aria-label": "Progress", hidden: true });
  private logs = h("pre", { class: "logs", "data-testid": "logs", tabindex: 0, "aria-label": "Logs" });
  private live = h("p", { class: "live", "data-testid": "live", hidden: true, "aria-live": "polite" });
  private output = h("div", { class: "output", "data-testid": "output" });
  private error = h("p", { class: "error", role: "alert", hidden: true });
  private stream: LiveStream | null = null;
  private events: EventSource | null = null;
  private stopped = false;

  constructor(
    private api: Api,
    private prediction: Prediction,
    private options: RunOptions,
  ) {
    this.cancel.addEventListener("click", () => void this.doCancel());
    this.element = h(
      "section",
      { class: "run", "aria-label": "Run", "data-prediction": prediction.id },
      h("div", { class: "run-head" }, this.status, this.time, this.cancel),
      this.progress,
      this.live,
      this.error,
      this.output,
      h("details", { class: "logs-box", open: !options.foldLogs }, h("summary", {}, "Logs"), this.logs),
    );
    if (options.live && !TERMINAL.has(prediction.status)) this.listen(prediction.urls.stream);
    this.show(prediction);
    if (!TERMINAL.has(prediction.status)) void this.poll();
  }

  /** Stop polling, listening and playing (the page moved on). */
  close(): void {
    this.stopped = true;
    this.events?.close();
    this.stream?.stop();
  }

  private listen(url: string): void {
    this.stream = new LiveStream(audioContext(), (count) => {
      this.live.hidden = false;
      this.live.textContent = `Playing live as it is made: chunk ${count}.`;
      if (count === 1) {
        this.element.setAttribute("data-first-chunk-at", String(this.stream?.firstStartedAt));
        // "running" once the page may sound: a context made without a click stays "suspended".
        this.element.setAttribute("data-audio-state", audioContext().state);
      }
    });
    const events = new EventSource(url);
    this.events = events;
    events.addEventListener("output", (event) => {
      const data = (event as MessageEvent<string>).data;
      // After the run ends, the player takes over: a whole output sent at the end is no chunk.
      if (TERMINAL.has(this.prediction.status)) return;
      const chunk = urls(parse(data));
      for (const url of chunk.filter(isAudio)) this.stream?.add(url);
    });
    events.addEventListener("done", () => events.close());
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) this.events = null;
    });
  }

  private async poll(): Promise<void> {
    while (!this.stopped && !TERMINAL.has(this.prediction.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      try {
        this.show(await this.api.prediction(this.prediction.id, this.options.query));
      } catch (exc) {
        this.showError(exc as Error);
      }
    }
  }

  private async doCancel(): Promise<void> {
    this.cancel.disabled = true;
    try {
      this.show(await this.api.cancel(this.prediction));
    } catch (exc) {
      this.showError(exc as Error);
      this.cancel.disabled = false;
    }
  }

  private showError(exc: Error): void {
    this.error.hidden = false;
    this.error.textContent = exc instanceof ApiError ? exc.message : String(exc);
  }

  private show(prediction: Prediction): void {
    const was = this.prediction.status;
    this.prediction = prediction;
    this.status.textContent = prediction.status;
    this.status.className = `status status-${prediction.status}`;
    this.element.setAttribute("data-status", prediction.status);
    const done = TERMINAL.has(prediction.status);
    this.cancel.hidden = done || this.options.query !== undefined;
    this.logs.textContent = prediction.logs ?? "";
    this.logs.scrollTop = this.logs.scrollHeight;
    // The last progress line of the logs (tqdm's form, as Cog writes it).
    const percent = [...(prediction.logs ?? "").matchAll(PROGRESS)].pop();
    this.progress.hidden = percent === undefined;
    if (percent) this.progress.value = Number(percent[1]);
    if (done) this.progress.value = prediction.status === "succeeded" ? 100 : this.progress.value;
    this.time.textContent = timing(prediction);
    this.error.hidden = !prediction.error;
    this.error.textContent = prediction.error ?? "";
    if (done && (!TERMINAL.has(was) || this.output.childElementCount === 0)) {
      this.events?.close();
      this.showOutput(prediction);
      this.options.onDone?.(prediction);
    }
  }

  private showOutput(prediction: Prediction): void {
    const signed = urls(prediction.signed_output ?? prediction.output);
    fill(
      this.output,
      signed.map((url, i) => {
        const name = fileName(url);
        const download = h("a", { href: url, download: name, class: "button small" }, `Download ${name}`);
        if (isAudio(url)) return h("div", { class: "output-item" }, player(url, `Output ${i + 1}: ${name}`), download);
        if (isImage(url)) return h("div", { class: "output-item" }, h("img", { src: url, alt: name }), download);
        return h("div", { class: "output-item" }, download);
      }),
      // Text, and an object's other fields (a digest beside a file, say), are shown as they are.
      signed.length === 0 || isRecord(prediction.output)
        ? h("pre", { class: "output-text" }, text(prediction.output))
        : null,
    );
  }
}

function isRecord(value: Json): boolean {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function text(value: Json): string {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

/** An event's data: JSON, or text as it is (a model's string output). */
function parse(data: string): Json {
  try {
    return JSON.parse(data) as Json;
  } catch {
    return data;
  }
}

/** How long it took: the model's own time and the whole wait, once known. */
export function timing(prediction: Prediction): string {
  const metrics = prediction.metrics;
  if (!metrics) return "";
  return `Ran ${seconds(metrics.predict_time)} · ${seconds(metrics.total_time)} in all`;
}
