// Over https, run() returns FileOutput objects (useFileOutput's default), which fetch their URL
// with no token; with useFileOutput: false it returns the URL.
import Replicate from "replicate";
import { replicate, report } from "./client.mjs";

const output = await replicate.run("overture/synth", { input: { duration: 1, seed: 11 } });
const blob = await output.blob();
const head = new TextDecoder().decode(new Uint8Array(await blob.arrayBuffer()).slice(0, 4));

const plain = new Replicate({ baseUrl: replicate.baseUrl, useFileOutput: false });
const url = await plain.run("overture/synth", { input: { duration: 1, seed: 11 } });

// A file input and its echo: an object output whose URL leaf becomes a FileOutput too.
const echoed = await replicate.run("tests/file-echo", { input: { audio: Buffer.from("echo me") } });

report({
  fileOutput: output instanceof ReadableStream && typeof output.blob === "function",
  url: String(output),
  head,
  type: blob.type,
  plain: typeof url,
  echoedFile: new TextDecoder().decode(new Uint8Array(await (await echoed.file.blob()).arrayBuffer())),
  echoedSize: echoed.size,
});
