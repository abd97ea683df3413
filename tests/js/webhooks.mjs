// webhooks.default.secret.get, and validateWebhook on a real delivery to a receiver in this process.
import { once } from "node:events";
import { createServer } from "node:http";
import { webcrypto } from "node:crypto";
import { validateWebhook } from "replicate";
import { replicate, report } from "./client.mjs";

let delivered;
const completed = new Promise((resolve) => {
  delivered = resolve;
});
const receiver = createServer(async (request, response) => {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  response.end();
  const body = Buffer.concat(chunks).toString();
  if (JSON.parse(body).status === "succeeded") delivered({ headers: request.headers, body });
});
receiver.listen(0, "127.0.0.1");
await once(receiver, "listening");

const { key } = await replicate.webhooks.default.secret.get();
const prediction = await replicate.predictions.create({
  model: "overture/synth",
  input: { duration: 1 },
  webhook: `http://127.0.0.1:${receiver.address().port}/hook`,
  webhook_events_filter: ["completed"],
});
const { headers, body } = await completed;
receiver.close();

// webcrypto passed explicitly, as the client's documentation says for node 18.
const request = new Request("http://receiver/hook", { method: "POST", headers, body });
const fields = {
  id: headers["webhook-id"],
  timestamp: headers["webhook-timestamp"],
  signature: headers["webhook-signature"],
  body,
  secret: key,
};
report({
  secretPrefix: key.split("_")[0],
  prediction: prediction.id,
  deliveredFor: JSON.parse(body).id,
  validRequest: await validateWebhook(request, key, webcrypto),
  validFields: await validateWebhook(fields, webcrypto),
  tamperedBody: await validateWebhook({ ...fields, body: body.replace("succeeded", "failed") }, webcrypto),
  otherSecret: await validateWebhook({ ...fields, secret: `whsec_${btoa("another secret")}` }, webcrypto),
});
