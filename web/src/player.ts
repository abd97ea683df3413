// Playing audio: the finished clip with its waveform and spectrogram (wavesurfer.js), a small
// waveform for a list, and the chunks of a streamed run, scheduled back to back as they arrive.

import WaveSurfer from "wavesurfer.js";
import Spectrogram from "wavesurfer.js/plugins/spectrogram";
import { h } from "./dom";

/** An `<audio>` element with controls, its waveform and spectrogram drawn under it. */
export function player(url: string, label: string): HTMLElement {
  const audio = h("audio", { controls: true, preload: "auto", src: url, "aria-label": label });
  const wave = h("div", { class: "waveform", "data-testid": "waveform" });
  const spectrum = h("div", { class: "spectrogram", "data-testid": "spectrogram" });
  const element = h("figure", { class: "player" }, audio, wave, spectrum);
  // Drawn once on the page, when the container has its width.
  requestAnimationFrame(() => {
    const surfer = WaveSurfer.create({
      container: wave,
      media: audio,
      height: 72,
      waveColor: "#8c7ae6",
      progressColor: "#4b3fb5",
      cursorColor: "#222",
      normalize: true,
      url,
    });
    surfer.registerPlugin(Spectrogram.create({ container: spectrum, height: 128, labels: true, scale: "mel" }));
    surfer.on("ready", () => element.setAttribute("data-ready", "true"));
    surfer.on("error", (exc) => element.setAttribute("data-error", String(exc)));
  });
  return element;
}

let shared: AudioContext | null = null;

/** The page's one AudioContext: made on a click (browsers allow sound after a gesture). */
export function audioContext(): AudioContext {
  shared ??= new AudioContext();
  if (shared.state === "suspended") void shared.resume();
  return shared;
}

/** A small waveform of `url` on a canvas, for lists: peaks of the decoded audio, fetched only once
 * the row is on screen (a page of History holds up to a hundred clips). */
export function miniWave(url: string, label: string): HTMLCanvasElement {
  const canvas = h("canvas", { class: "mini-wave", width: 160, height: 32, role: "img", "aria-label": label });
  const seen = new IntersectionObserver((entries) => {
    if (!entries.some((entry) => entry.isIntersecting)) return;
    seen.disconnect();
    void (async () => {
      try {
        const bytes = await (await fetch(url)).arrayBuffer();
        const audio = await new OfflineAudioContext(1, 1, 8000).decodeAudioData(bytes);
        draw(canvas, audio.getChannelData(0));
        canvas.setAttribute("data-drawn", "true");
      } catch {
        canvas.setAttribute("aria-label", `${label} (could not be drawn)`);
      }
    })();
  });
  seen.observe(canvas);
  return canvas;
}

function draw(canvas: HTMLCanvasElement, samples: Float32Array): void {
  const context = canvas.getContext("2d");
  if (!context) return;
  const { width, height } = canvas;
  const step = Math.max(1, Math.floor(samples.length / width));
  context.fillStyle = "#6c5ce7";
  for (let x = 0; x < width; x++) {
    let peak = 0;
    for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) peak = Math.max(peak, Math.abs(samples[i]));
    const bar = Math.max(1, peak * height);
    context.fillRect(x, (height - bar) / 2, 1, bar);
  }
}

/** Plays a streamed run's chunks as they arrive, each right after the one before. */
export class LiveStream {
  private next = 0;
  private played = 0;
  private sources: AudioBufferSourceNode[] = [];
  private stopped = false;
  private pending: Promise<void> = Promise.resolve();
  /** Date.now() when the first chunk started to sound. */
  firstStartedAt: number | null = null;

  constructor(
    private context: AudioContext,
    private onChunk: (count: number) => void,
  ) {}

  /** Queue a chunk; chunks are decoded in the order they came. */
  add(url: string): void {
    this.pending = this.pending.then(() => this.play(url)).catch(() => undefined);
  }

  private async play(url: string): Promise<void> {
    const bytes = await (await fetch(url)).arrayBuffer();
    const buffer = await this.context.decodeAudioData(bytes);
    if (this.stopped) return;
    const source = this.context.createBufferSource();
    this.sources.push(source);
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A little headroom for the first chunk; then each starts where the last ends, without a gap.
    const at = Math.max(this.next, this.context.currentTime + 0.05);
    source.start(at);
    this.next = at + buffer.duration;
    this.played += 1;
    this.firstStartedAt ??= Date.now() + (at - this.context.currentTime) * 1000;
    this.onChunk(this.played);
  }

  /** Silence what is playing and scheduled (the visitor left the page). */
  stop(): void {
    this.stopped = true;
    for (const source of this.sources.splice(0)) source.stop();
  }
}
