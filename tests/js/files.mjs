// files.create/get/list/delete as the client sends them (metadata as a JSON Blob part), and a Blob
// input that run() uploads first.
import { createHash } from "node:crypto";
import { failure, replicate, report } from "./client.mjs";

const bytes = Buffer.from("RIFF, or close enough: bytes from the JavaScript client");
const fromBuffer = await replicate.files.create(bytes, { purpose: "test", n: 1 });
const fromBlob = await replicate.files.create(new Blob(["abc"], { type: "text/plain" }));
const got = await replicate.files.get(fromBuffer.id);
const listed = await replicate.files.list();
// A Blob in the input: the client uploads it with files.create and sends its urls.get.
const echoed = await replicate.run("tests/file-echo", { input: { audio: new Blob([bytes]) } });
const deleted = await replicate.files.delete(fromBuffer.id);

report({
  fromBuffer: {
    name: fromBuffer.name,
    size: fromBuffer.size,
    content_type: fromBuffer.content_type,
    metadata: fromBuffer.metadata,
    md5: fromBuffer.checksums.md5,
  },
  expectedMd5: createHash("md5").update(bytes).digest("hex"),
  fromBlob: { name: fromBlob.name, size: fromBlob.size, content_type: fromBlob.content_type, metadata: fromBlob.metadata },
  got: got.id === fromBuffer.id,
  listed: listed.results.map((file) => file.id),
  ids: [fromBuffer.id, fromBlob.id],
  echoed: { sha256: echoed.sha256, size: echoed.size },
  expectedSha256: createHash("sha256").update(bytes).digest("hex"),
  deleted,
  afterDelete: await failure(replicate.files.get(fromBuffer.id)),
});
