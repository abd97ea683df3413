// What every script shares: the client configured as the README shows, and one JSON report on stdout.
import Replicate from "replicate";

// The token comes from REPLICATE_API_TOKEN, as the client reads it by default; the base URL is
// the server's root, as the Python client takes it, plus the /v1 that the JavaScript client wants.
export const replicate = new Replicate({ baseUrl: `${process.env.REPLICATE_BASE_URL}/v1` });

/** Print what a script saw, for tests/test_js_client.py to assert on. */
export function report(value) {
  process.stdout.write(JSON.stringify(value));
}

/** What a rejected call threw: the client's ApiError carries the HTTP response. */
export async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { name: error.name, message: error.message, status: error.response?.status ?? null };
  }
  throw new Error("expected the call to fail");
}

/** The first bytes of a file at a URL fetched with no token, as text ("RIFF" for a WAV). */
export async function fetchWithoutToken(url) {
  const response = await fetch(url);
  const bytes = new Uint8Array(await response.arrayBuffer());
  return {
    status: response.status,
    type: response.headers.get("content-type"),
    head: new TextDecoder().decode(bytes.slice(0, 4)),
  };
}
