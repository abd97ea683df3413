// The form's input as ready-to-run code for the official clients, pointed at this server.

import { type Json } from "./api";

/** A JSON value written as Python: the seed document's `replicate.run` style. */
function python(value: Json, indent: string): string {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) {
    return value.length ? `[\n${value.map((v) => `${inner}${python(v, inner)}`).join(",\n")}\n${indent}]` : "[]";
  }
  const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)}`);
  return items.length ? `{\n${items.join(",\n")}\n${indent}}` : "{}";
}

export interface Snippet {
  language: "Python" | "JavaScript" | "curl";
  code: string;
}

/** `ref` is `owner/name`; `version` the version id the page shows. */
export function snippets(base: string, ref: string, version: string, input: Record<string, Json>): Snippet[] {
  const identifier = `${ref}:${version}`;
  const token = "export REPLICATE_API_TOKEN=<your token>\n";
  // The clients are pointed at this server in the code itself, so it runs as copied.
  const pythonCode =
    `# pip install replicate\n# ${token}import os\n\n` +
    `os.environ["REPLICATE_BASE_URL"] = ${JSON.stringify(base)}  # this Overture server\n` +
    `import replicate\n\n` +
    `output = replicate.run(\n    ${JSON.stringify(identifier)},\n    input=${python(input, "    ")}\n)\nprint(output)\n`;
  const jsInput = JSON.stringify(input, null, 2).replaceAll("\n", "\n  ");
  const javascript =
    `// npm install replicate, save as run.mjs, node run.mjs\n// ${token}` +
    `import Replicate from "replicate";\n\n` +
    `const replicate = new Replicate({ baseUrl: ${JSON.stringify(`${base}/v1`)} });\n` +
    `const output = await replicate.run(${JSON.stringify(identifier)}, {\n  input: ${jsInput},\n});\n` +
    `console.log(String(output));\n`;
  const body = JSON.stringify({ version, input });
  const curl =
    token +
    `curl -s -X POST ${JSON.stringify(`${base}/v1/predictions`)} \\\n` +
    `  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\\n` +
    `  -H "Content-Type: application/json" \\\n` +
    `  -H "Prefer: wait" \\\n` +
    `  -d '${body.replaceAll("'", "'\\''")}'\n`;
  return [
    { language: "Python", code: pythonCode },
    { language: "JavaScript", code: javascript },
    { language: "curl", code: curl },
  ];
}
