// replicate.stream(), and an existing prediction's urls.stream read as the client reads it: with no
// token, only "Accept: text/event-stream" (a browser's EventSource sends none either).
import { createReadableStream } from "replicate/lib/stream.js";
import { fetchWithoutToken, replicate, report } from "./client.mjs";

function summary(event) {
  return { event: event.event, id: event.id, data: String(event.data) };
}

async function stream(options) {
  const events = [];
  for await (const event of replicate.stream("overture/synth", options)) {
    events.push(summary(event));
  }
  return events;
}

// As Replicate code calls it: the clip as one output event at the end.
const whole = await stream({ input: { duration: 4, seed: 3 } });
// With the body's (deprecated) stream flag, which the client passes on: each section as it is done.
const sections = await stream({ input: { duration: 4, seed: 4 }, stream: true });
const firstOutput = whole.find((event) => event.event === "output");

// A prediction created earlier, read after it finished: the stream replays it.
const prediction = await replicate.predictions.create({ model: "tests/steps", input: { steps: 3, label: "late" } });
await replicate.wait(prediction, { interval: 50 });
const replayed = [];
for await (const event of createReadableStream({ url: prediction.urls.stream, fetch })) {
  replayed.push(summary(event));
}

const tampered = new URL(prediction.urls.stream);
tampered.searchParams.set("signature", "0".repeat(64));
const unsigned = new URL(prediction.urls.stream);
unsigned.search = "";
const headers = { Accept: "text/event-stream" };

report({
  whole,
  sections,
  outputFile: await fetchWithoutToken(firstOutput.data),
  replayed,
  contentType: (await fetch(prediction.urls.stream, { headers })).headers.get("content-type"),
  tampered: (await fetch(tampered, { headers })).status,
  unsigned: (await fetch(unsigned, { headers })).status,
});
