// The public HTTP API, as the page uses it: the same routes and JSON as Replicate's clients.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Prediction {
  id: string;
  model: string;
  version: string;
  input: Record<string, Json>;
  output: Json;
  signed_output?: Json;
  logs: string | null;
  error: string | null;
  status: "starting" | "processing" | "succeeded" | "failed" | "canceled";
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  metrics?: { predict_time?: number; total_time?: number };
  urls: { get: string; cancel: string; stream: string; web: string };
}

export interface Model {
  owner: string;
  name: string;
  description: string | null;
  url: string;
  run_count: number;
  latest_version: { id: string; openapi_schema: Record<string, Json> } | null;
  /** Overture extra: each variant's weights, and whether they are on this machine. */
  "x-overture-weights"?: Weight[];
}

export interface Weight {
  model_version: string;
  ready: boolean;
  reason?: string;
}

/** A model's weights as the server lists them; none for a model without any to fetch. */
export function weights(model: Model): Weight[] {
  return model["x-overture-weights"] ?? [];
}

export interface Page<T> {
  next: string | null;
  results: T[];
}

/** An error the API answered with (an RFC 7807 problem), or a server that did not answer. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** 422: each invalid field and why, `input.<name>` for a model's input. */
    readonly fields: { field: string; message: string }[] = [],
  ) {
    super(message);
  }
}

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

/** The server's API at `base` (its origin and path prefix), with the browser's token or a page's signature. */
export class Api {
  constructor(
    readonly base: string,
    private token: string | null,
  ) {}

  async request<T>(method: string, path: string, body?: Json | FormData): Promise<T> {
    const url = path.startsWith("http") ? path : `${this.base}${path}`;
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined && !(body instanceof FormData)) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body instanceof FormData ? body : body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, `The server at ${this.base} is not answering. Is \`overture serve\` still running?`);
    }
    if (response.ok) return (await response.json()) as T;
    let problem: { detail?: string; title?: string; invalid_fields?: { field: string; message: string }[] } = {};
    try {
      problem = await response.json();
    } catch {
      // Not a problem object (a proxy's page, say): the status says enough.
    }
    const detail = problem.detail ?? problem.title ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, detail.trim(), problem.invalid_fields ?? []);
  }

  account(): Promise<{ username: string }> {
    return this.request("GET", "/v1/account");
  }

  models(): Promise<Page<Model>> {
    return this.request("GET", "/v1/models");
  }

  model(ref: string): Promise<Model> {
    return this.request("GET", `/v1/models/${ref}`);
  }

  version(ref: string, id: string): Promise<{ id: string; openapi_schema: Record<string, Json> }> {
    return this.request("GET", `/v1/models/${ref}/versions/${id}`);
  }

  create(ref: string, version: string | null, input: Record<string, Json>, stream: boolean): Promise<Prediction> {
    if (version) return this.request("POST", "/v1/predictions", { version, input, stream });
    return this.request("POST", `/v1/models/${ref}/predictions`, { input, stream });
  }

  /** A prediction; `query` is a shared page's signature, read without the token. */
  prediction(id: string, query = ""): Promise<Prediction> {
    return this.request("GET", `/v1/predictions/${encodeURIComponent(id)}${query}`);
  }

  cancel(prediction: Prediction): Promise<Prediction> {
    return this.request("POST", prediction.urls.cancel);
  }

  predictions(filters: { model?: string; status?: string }, next?: string): Promise<Page<Prediction>> {
    if (next) return this.request("GET", next);
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][]);
    return this.request("GET", `/v1/predictions${query.size ? `?${query}` : ""}`);
  }

  async upload(file: Blob, name: string): Promise<string> {
    const form = new FormData();
    form.append("content", file, name);
    const created = await this.request<{ urls: { get: string } }>("POST", "/v1/files", form);
    return created.urls.get;
  }
}

/** An http(s) URL, or null for any other text: what a model returns is not trusted to parse. */
export function parseUrl(text: string): URL | null {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

/** Every URL in an output, in order (a string, a list, an object of them). */
export function urls(output: Json | undefined): string[] {
  if (typeof output === "string") return parseUrl(output) ? [output] : [];
  if (Array.isArray(output)) return output.flatMap(urls);
  if (output && typeof output === "object") return Object.values(output).flatMap(urls);
  return [];
}

const AUDIO = /\.(wav|mp3|flac|ogg|opus|m4a|aac)$/i;
const IMAGE = /\.(png|jpe?g|webp|gif)$/i;

export const isAudio = (url: string): boolean => AUDIO.test(parseUrl(url)?.pathname ?? "");
export const isImage = (url: string): boolean => IMAGE.test(parseUrl(url)?.pathname ?? "");

/** The name a download gets: the output file's own. */
export function fileName(url: string): string {
  const last = parseUrl(url)?.pathname.split("/").pop();
  try {
    return last ? decodeURIComponent(last) : "output";
  } catch {
    return last ?? "output";
  }
}
