// run (by name, by version, blocking, polling), predictions.create/get/list/cancel, wait, paginate,
// models and versions, deployments, and the errors the client shows.
import { failure, fetchWithoutToken, replicate, report } from "./client.mjs";

const model = await replicate.models.get("overture", "synth");
const versions = await replicate.models.versions.list("overture", "synth");
const version = await replicate.models.versions.get("overture", "synth", model.latest_version.id);

// run() blocks by default (Prefer: wait) and returns the output; over http a URL string.
const byName = await replicate.run("overture/synth", { input: { duration: 1, seed: 7 } });
const byVersion = await replicate.run(`overture/synth:${version.id}`, { input: { duration: 1, seed: 7 } });

// Polling instead of blocking, with the progress callback seeing each state.
const polledStates = [];
const polled = await replicate.run(
  "tests/steps",
  { input: { steps: 4, step_seconds: 0.1, label: "polled" }, wait: { mode: "poll", interval: 50 } },
  (prediction) => polledStates.push(prediction.status),
);
// Prefer: wait=1 for something that takes longer: the answer says "starting" and run() polls.
const blockedStates = [];
const blocked = await replicate.run(
  "tests/steps",
  { input: { steps: 15, step_seconds: 0.1, label: "blocked" }, wait: { mode: "block", timeout: 1 } },
  (prediction) => blockedStates.push(prediction.status),
);

// The tiny MusicGen checkpoint the test server maps to facebook/musicgen-small.
const musicgen = await replicate.run("meta/musicgen", {
  input: { prompt: "lofi hip hop beat", model_version: "small", duration: 1 },
});

// create, then wait(); get; create by version with wait: true.
const created = await replicate.predictions.create({ model: "tests/steps", input: { steps: 2, label: "created" } });
const waited = await replicate.wait(created, { interval: 50 });
const got = await replicate.predictions.get(created.id);
const createdByVersion = await replicate.predictions.create({
  version: version.id,
  input: { duration: 1 },
  wait: true,
});

// cancel a long one.
const long = await replicate.predictions.create({ model: "tests/steps", input: { steps: 1000, step_seconds: 0.05 } });
await replicate.predictions.cancel(long.id);
const canceled = await replicate.wait(long, { interval: 50 });

const deployed = await replicate.deployments.predictions.create("overture", "synth", {
  input: { duration: 1 },
  wait: true,
});

// Every prediction of this token, page by page (the server's pages hold 5).
const firstPage = await replicate.predictions.list();
const pages = [];
for await (const page of replicate.paginate(replicate.predictions.list)) {
  pages.push(page.map((prediction) => prediction.id));
}

report({
  model: { owner: model.owner, name: model.name, latest: model.latest_version.id },
  versions: versions.results.map((v) => v.id),
  version: { id: version.id, inputs: Object.keys(version.openapi_schema.components.schemas.Input.properties) },
  byName: { output: byName, file: await fetchWithoutToken(byName) },
  byVersion,
  polled,
  polledStates,
  blocked,
  blockedStates,
  musicgen: { output: musicgen, file: await fetchWithoutToken(musicgen) },
  created: { id: created.id, status: created.status },
  waited: { id: waited.id, status: waited.status, output: waited.output },
  got: { id: got.id, status: got.status, output: got.output },
  createdByVersion: { status: createdByVersion.status, version: createdByVersion.version },
  canceled: { id: canceled.id, status: canceled.status },
  deployed: { status: deployed.status, deployment: deployed.deployment, model: deployed.model },
  firstPage: { count: firstPage.results.length, next: firstPage.next },
  pages,
  errors: {
    invalidInput: await failure(replicate.run("overture/synth", { input: { duration: -5 } })),
    unknownModel: await failure(replicate.run("nobody/nothing", { input: {} })),
    modelFailure: await failure(replicate.run("tests/steps", { input: { steps: 0, fail: true } })),
    badToken: await failure(new replicate.constructor({ auth: "r8_wrong", baseUrl: replicate.baseUrl }).predictions.list()),
  },
});
