"""Schemathesis against the server's own ``/openapi.json``: every operation, those without a token
included, with a fixed seed, drawing control and non-ASCII characters for path and query
parameters (``fuzz_hooks.py``); then every path and query parameter of every operation, one at a
time, with a fixed list of such characters. Neither may find a server error or a response that
breaks the document.

A default Schemathesis run found a 500 on ``/signed/outputs/...`` in 13 s while this suite's run,
limited to ``/v1/`` and to what Schemathesis draws by itself, passed: hence every operation, and
values chosen where routes break (hostile characters, identifiers that exist).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harness import TESTS_DIR, TOKEN, UNLIMITED, Server, wait_finished

pytestmark = pytest.mark.timeout(240)

#: Schemathesis checks: no 5xx, and status, content type, headers and body as the document says.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "response_headers_conformance,ignored_auth"
)
SEED = 7
#: Per operation and phase: about 1,200 requests, 30 s on the 2-core CI machine.
MAX_EXAMPLES = 30
#: What the sweep puts in each parameter: controls, the soft hyphen that was a 500 in a signature,
#: Latin-1 and astral characters, bidi and byte-order marks, delimiters, a dot segment, 5,000 digits.
HOSTILE_VALUES = [
    "\x00",
    "\xad4",
    "\xe9\xe8",
    "\U0001f3b5",
    "\r\n\t",
    "\u202e\ufeff",
    "\x7f\x85",
    "%/?#",
    "..",
    "9" * 5000,
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Its own server: fuzzed predictions queue up, and the short timeout clears them.
    server = Server(tmp_path_factory.mktemp("fuzz") / "data", "--prediction-timeout", "5", *UNLIMITED).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def known(srv: Server) -> dict[str, list[str]]:
    """Records that exist, by the parameter names that point at them."""
    with srv.http() as http:
        audio = "data:audio/wav;base64," + base64.b64encode(b"RIFF-fuzz").decode()
        done = wait_finished(
            http, http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": audio}}).json()["id"]
        )
        uploaded = http.post("/v1/files", files={"content": ("melody.wav", b"RIFF", "audio/wav")}).json()
    signed = urllib.parse.urlsplit(done["signed_output"]["file"])
    query = dict(urllib.parse.parse_qsl(signed.query))
    return {
        "prediction_id": [done["id"]],
        "name": [urllib.parse.unquote(signed.path.rsplit("/", 1)[1])],
        "expires": [query["expires"]],
        "signature": [query["signature"]],
        "file_id": [uploaded["id"]],
        "model_owner": ["tests", "overture"],
        "model_name": ["steps", "synth"],
        "deployment_owner": ["tests"],
        "deployment_name": ["steps"],
        "version_id": ["tests-steps-v1"],
    }


def _hostile(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) >= 0x7F for c in text)


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], re.Pattern[str]]:
    """(method, path template) of every operation, with a pattern matching its raw URL paths."""
    return {
        (method.upper(), path): re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]*)", re.escape(path)) + "$")
        for path, operations in spec["paths"].items()
        for method in operations
    }


def test_schemathesis_finds_no_server_error_on_any_operation(
    srv: Server, known: dict[str, list[str]], tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'headers = {{ Authorization = "Bearer {TOKEN}" }}\n')
    har = tmp_path / "run.har"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "FUZZ_KNOWN": json.dumps(known),
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
         f"{srv.base_url}/openapi.json", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
         "--checks", CHECKS, "--workers", "1", "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=200, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]

    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    hostile = sum(_hostile(urllib.parse.unquote(entry["request"]["url"])) for entry in entries)
    print(
        f"schemathesis: {len(entries)} requests ({hostile} with control or non-ASCII characters in the URL)"
        f" in {seconds:.0f} s, statuses {dict(sorted(statuses.items()))}"
    )
    assert len(entries) >= 1000 and not [s for s in statuses if s >= 500]
    operations = _operations(httpx.get(f"{srv.base_url}/openapi.json").json())
    tested = {
        (method, path)
        for entry in entries
        for (method, path), pattern in operations.items()
        if method == entry["request"]["method"] and pattern.match(urllib.parse.urlsplit(entry["request"]["url"]).path)
    }
    assert tested == set(operations), set(operations) - tested
    with srv.http() as http:
        assert http.get("/health").status_code == 200


def test_every_path_and_query_parameter_takes_hostile_characters(srv: Server, known: dict[str, list[str]]) -> None:
    """Each parameter in turn gets each of ``HOSTILE_VALUES`` while the others hold values that
    exist, so the hostile one reaches as deep into its route as it can."""
    existing = {name: values[0] for name, values in known.items()}
    schema = schemathesis.openapi.from_url(f"{srv.base_url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    sent = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        params = [p for p in operation.iter_parameters() if p.location in ("path", "query")]
        json_body = "application/json" in operation.get_request_payload_content_types()
        valid = {p.location: {} for p in params}
        for p in params:
            valid[p.location][p.name] = existing.get(p.name, "x")
        for target in params:
            for value in HOSTILE_VALUES:
                values = {location: dict(named) for location, named in valid.items()}
                values[target.location][target.name] = value
                case = operation.Case(
                    path_parameters=values.get("path"),
                    query=values.get("query"),
                    # A body that is valid where there is one, so the request gets as far as the parameter.
                    body={"input": {"steps": 1}} if json_body else NOT_SET,
                    media_type="application/json" if json_body else None,
                )
                case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=checks)
                sent[operation.label] += 1
    print(f"hostile parameter sweep: {sum(sent.values())} requests over {len(sent)} operations")
    with srv.http() as http:
        assert http.get("/health").status_code == 200
