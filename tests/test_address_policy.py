"""Where the server connects when it fetches a file input or sends a webhook (engine/netpolicy.py).

Every packet here stays on loopback. Addresses that must never be reached (cloud metadata at
169.254.169.254 and the like) are refused before any connection, as the error messages show.
Rebinding tests let a name answer first 127.0.0.1, then 127.0.0.2, and the server's policy refuses
127.0.0.2; a real HTTP server listening there records that it was never contacted.

Names resolve through a real DNS server that this module runs on a loopback address: the Overture
server starts in a mount namespace of its own (``unshare --mount``, as root, as in CI) where
/etc/resolv.conf names that DNS server.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import trustme
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from harness import Server, require, wait_finished

pytestmark = pytest.mark.timeout(120)

BODY = b"RIFF-not-really-audio-but-bytes-to-echo"


class ScriptedDNS(BaseResolver):
    """Answers each name's A queries from its script, one entry per query, repeating the last;
    AAAA queries get no answer, and unknown names NXDOMAIN."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.asked: Counter[str] = Counter()

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]  # dnslib's signature
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        script = self.scripts.get(name)
        if script is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            answer = script[min(self.asked[name], len(script) - 1)]
            self.asked[name] += 1
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(answer), ttl=0))
        return reply


def _can_bind_mounts() -> bool:
    """Whether a mount namespace with a bind mount can be made here (a container may refuse it)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "mount", "--bind", "/etc/hosts", "/etc/hosts"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScriptedDNS, Path]]:
    """The DNS server, and a resolv.conf that names it (port 53: glibc asks no other)."""
    require(_can_bind_mounts(), "root and unshare(1) with mount namespaces (CAP_SYS_ADMIN) for the test's DNS")
    resolver = ScriptedDNS()
    for last in range(53, 254):
        address = f"127.0.53.{last}"
        try:
            server = DNSServer(resolver, address=address, port=53, logger=DNSLogger(logf=lambda _: None))
            break
        except OSError:
            continue
    else:
        raise RuntimeError("no loopback address has port 53 free for the test DNS server")
    server.start_thread()
    resolv = tmp_path_factory.mktemp("dns") / "resolv.conf"
    resolv.write_text(f"nameserver {address}\noptions attempts:1 timeout:5\n")
    yield resolver, resolv
    server.stop()


class Recorder:
    """A real HTTP(S) server on one loopback address that records every request it gets.

    ``GET /redirect?to=URL`` answers 302 to URL; any other GET answers ``BODY``; POST answers 200.
    """

    def __init__(self, host: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                recorder.requests.append({"method": self.command, "path": self.path, "host": self.headers["host"]})

            def do_GET(self) -> None:
                self._record()
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect?to="))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self._record()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)  # type: ignore[assignment]
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pair() -> Iterator[tuple[Recorder, Recorder]]:
    """Recorders on 127.0.0.1 and on 127.0.0.2 with the same port: one URL reaches either,
    depending only on what its name resolves to. The second is the one no test may reach."""
    while True:
        allowed = Recorder("127.0.0.1")
        try:
            refused = Recorder("127.0.0.2", allowed.port)
            break
        except OSError:
            allowed.close()
    yield allowed, refused
    allowed.close()
    refused.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, dns: tuple[ScriptedDNS, Path], ca: trustme.CA) -> Iterator[Server]:
    """A server that resolves through the test DNS and trusts the test CA. Inputs: no private
    addresses except 127.0.0.1/32, let through by an allow range. Webhooks: 127.0.0.2/32 denied."""
    _, resolv = dns
    tmp = tmp_path_factory.mktemp("strict")
    hosts = tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    launcher = (
        "unshare", "--mount", "sh", "-c",
        f'mount --bind {resolv} /etc/resolv.conf && mount --bind {hosts} /etc/hosts && exec "$@"', "sh",
    )  # fmt: skip
    srv = Server(
        tmp / "overture-data",
        "--no-input-allow-private",
        "--input-allow-cidr", "127.0.0.1/32",
        "--webhook-deny-cidr", "127.0.0.2/32",
        "--webhook-backoff-seconds", "0.1",
        launcher=launcher,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(ca_file))
        srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with no address options at all."""
    srv = Server(tmp_path_factory.mktemp("default") / "overture-data").start()
    yield srv
    srv.stop()


def _create(server: Server, url: str) -> tuple[int, dict]:
    with server.http() as http:
        response = http.post("/v1/models/tests/file-echo/predictions", json={"input": {"audio": url}})
        return response.status_code, response.json()


def _run(server: Server, url: str) -> dict:
    status, body = _create(server, url)
    assert status == 201, body
    with server.http() as http:
        return wait_finished(http, body["id"])


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", None),
        ("127.0.0.1", None),
        ("10.1.2.3", None),
        (
            "169.254.169.254",
            "a link-local address (169.254.169.254), which this server does not fetch; see --input-allow-cidr",
        ),
        ("fe80::1", "a link-local address (fe80::1)"),
        ("::ffff:169.254.169.254", "a link-local address (169.254.169.254)"),
        ("64:ff9b::a9fe:a9fe", "a link-local address (169.254.169.254)"),  # NAT64 reaches the IPv4 address
        ("0.0.0.0", "an unspecified address (0.0.0.0)"),
        ("::", "an unspecified address (::)"),
        ("224.0.0.1", "a multicast address (224.0.0.1)"),
        ("ff02::1", "a multicast address (ff02::1)"),
        ("240.0.0.1", "a reserved address (240.0.0.1)"),
        ("::ffff:240.0.0.1", "a reserved address (240.0.0.1)"),
    ],
)
def test_default_rules_refuse_addresses_that_are_never_a_file_server(address: str, refused: str | None) -> None:
    from overture.engine.netpolicy import AddressPolicy

    reason = AddressPolicy("input", "fetch").refusal(ip_address(address))
    assert reason == refused if refused is None else reason.startswith(refused), reason


def test_ranges_override_the_rules_and_the_longest_match_wins() -> None:
    from overture.engine.netpolicy import AddressPolicy

    policy = AddressPolicy(
        "input", "fetch", allow_private=False,
        allow=(ip_network("169.254.169.254/32"), ip_network("127.0.0.0/8")),
        deny=(ip_network("127.0.0.2/32"), ip_network("8.8.0.0/16")),
    )  # fmt: skip
    assert policy.refusal(ip_address("169.254.169.254")) is None  # explicitly allowed
    assert "link-local" in policy.refusal(ip_address("169.254.1.1"))
    assert policy.refusal(ip_address("127.0.0.1")) is None
    assert "denied range (127.0.0.2 in 127.0.0.2/32)" in policy.refusal(ip_address("127.0.0.2"))
    assert "denied range (127.0.0.2 in 127.0.0.2/32)" in policy.refusal(ip_address("::ffff:127.0.0.2"))
    assert "private address (10.0.0.1)" in policy.refusal(ip_address("10.0.0.1"))
    assert "see --input-deny-cidr" in policy.refusal(ip_address("8.8.8.8"))


# -- file inputs: refused at create time when the URL names the address --------------------------


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("http://169.254.169.254/latest/meta-data/", "a link-local address (169.254.169.254)"),
        ("http://[fe80::1]/a.wav", "a link-local address (fe80::1)"),
        ("http://[fe80::1%25eth0]/a.wav", "a link-local address (fe80::1%eth0)"),  # with a zone
        ("http://[::ffff:169.254.169.254]/a.wav", "a link-local address (169.254.169.254)"),
        ("http://[::ffff:a9fe:a9fe]:8080/a.wav", "a link-local address (169.254.169.254)"),
        ("http://2852039166/a.wav", "a link-local address (169.254.169.254)"),  # 169.254.169.254 as one number
        ("http://0xa9.0xfe.0xa9.0xfe/a.wav", "a link-local address (169.254.169.254)"),
        ("http://0.0.0.0:9/a.wav", "an unspecified address (0.0.0.0)"),
        ("http://[::]:9/a.wav", "an unspecified address (::)"),
        ("http://224.0.0.1/a.wav", "a multicast address (224.0.0.1)"),
        ("http://[ff02::1]/a.wav", "a multicast address (ff02::1)"),
        ("http://255.255.255.255/a.wav", "a reserved address (255.255.255.255)"),
    ],
)
def test_never_legitimate_addresses_are_refused_by_default(default: Server, url: str, what: str) -> None:
    status, body = _create(default, url)
    assert status == 422
    assert f"input.audio: refers to {what}, which this server does not fetch; see --input-allow-cidr" in body["detail"]


def test_an_input_url_that_cannot_be_parsed_is_refused_by_name(default: Server) -> None:
    status, body = _create(default, "http://[::1")
    assert status == 422 and "input.audio: is not a valid URL" in body["detail"], body


def test_loopback_inputs_are_fetched_by_default(default: Server) -> None:
    recorder = Recorder("127.0.0.1")
    try:
        body = _run(default, f"http://127.0.0.1:{recorder.port}/tone.wav")
        assert body["status"] == "succeeded" and body["output"]["size"] == len(BODY), body
    finally:
        recorder.close()


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.0.0.3", "127.0.0.3"), ("[::1]", "::1"), ("10.1.2.3", "10.1.2.3"), ("[::ffff:127.0.0.3]", "127.0.0.3")],
)
def test_no_input_allow_private_refuses_private_literals(strict: Server, host: str, address: str) -> None:
    status, body = _create(strict, f"http://{host}:9/a.wav")
    assert status == 422
    assert (
        f"input.audio: refers to a private address ({address}), which this server does not fetch; "
        "see --input-allow-private" in body["detail"]
    )


def test_an_allow_range_lets_one_private_address_through(strict: Server, pair: tuple[Recorder, Recorder]) -> None:
    allowed, refused = pair
    body = _run(strict, f"http://127.0.0.1:{allowed.port}/tone.wav")
    assert body["status"] == "succeeded" and body["output"]["size"] == len(BODY), body
    status, created = _create(strict, f"http://127.0.0.2:{refused.port}/tone.wav")
    assert status == 422 and "refers to a private address (127.0.0.2)" in created["detail"]
    assert refused.requests == []


# -- file inputs: names and redirects, judged where the connection is made ------------------------


def test_a_name_is_judged_by_what_it_resolves_to(
    strict: Server, dns: tuple[ScriptedDNS, Path], pair: tuple[Recorder, Recorder]
) -> None:
    resolver, _ = dns
    resolver.scripts["private.policy.test"] = ["127.0.0.2"]
    _, refused = pair
    body = _run(strict, f"http://private.policy.test:{refused.port}/a.wav")
    assert body["status"] == "failed"
    assert (
        f"input.audio: could not download http://private.policy.test:{refused.port}/a.wav: private.policy.test "
        "resolves to a private address (127.0.0.2), which this server does not fetch; see --input-allow-private"
    ) in body["error"]
    assert refused.requests == []


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/secret", "http://redirected.policy.test:{port}/secret"])
def test_every_redirect_hop_is_checked(
    strict: Server, dns: tuple[ScriptedDNS, Path], pair: tuple[Recorder, Recorder], target: str
) -> None:
    resolver, _ = dns
    resolver.scripts["redirected.policy.test"] = ["127.0.0.2"]
    allowed, refused = pair
    hop = target.format(port=refused.port)
    body = _run(strict, f"http://127.0.0.1:{allowed.port}/redirect?to={hop}")
    assert body["status"] == "failed"
    assert "a private address (127.0.0.2), which this server does not fetch" in body["error"], body["error"]
    if "127.0.0.2" in target:  # a literal is named as the redirect that led there
        assert f"redirect to {hop} refers to a private address (127.0.0.2)" in body["error"]
    assert [r["path"] for r in allowed.requests] == [f"/redirect?to={hop}"]
    assert refused.requests == []


def test_dns_rebinding_cannot_steer_an_input_download(
    strict: Server, dns: tuple[ScriptedDNS, Path], pair: tuple[Recorder, Recorder]
) -> None:
    """The name answers 127.0.0.1 (allowed) once, then 127.0.0.2 (refused). A check followed by a
    second lookup in the HTTP client would connect to 127.0.0.2; the server connects to what it
    checked, so the first download reads 127.0.0.1 and the next is refused."""
    resolver, _ = dns
    resolver.scripts["rebind-input.policy.test"] = ["127.0.0.1", "127.0.0.2"]
    allowed, refused = pair
    url = f"http://rebind-input.policy.test:{allowed.port}/tone.wav"
    first = _run(strict, url)
    assert first["status"] == "succeeded" and first["output"]["size"] == len(BODY), first
    assert refused.requests == []
    host = f"rebind-input.policy.test:{allowed.port}"
    assert allowed.requests == [{"method": "GET", "path": "/tone.wav", "host": host}]
    second = _run(strict, url)
    assert second["status"] == "failed"
    assert "rebind-input.policy.test resolves to a private address (127.0.0.2)" in second["error"]
    assert refused.requests == []


def test_tls_to_a_pinned_address_names_and_verifies_the_host(
    strict: Server, dns: tuple[ScriptedDNS, Path], ca: trustme.CA
) -> None:
    resolver, _ = dns
    resolver.scripts["media.tls.test"] = ["127.0.0.1"]
    resolver.scripts["other.tls.test"] = ["127.0.0.1"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("media.tls.test").configure_cert(context)
    recorder = Recorder("127.0.0.1", tls=context)
    try:
        body = _run(strict, f"https://media.tls.test:{recorder.port}/tone.wav")
        assert body["status"] == "succeeded" and body["output"]["size"] == len(BODY), body
        assert recorder.server_names == ["media.tls.test"]
        assert recorder.requests == [{"method": "GET", "path": "/tone.wav", "host": f"media.tls.test:{recorder.port}"}]
        # The same address under a name its certificate does not carry: verified against the name.
        body = _run(strict, f"https://other.tls.test:{recorder.port}/tone.wav")
        assert body["status"] == "failed" and "certificate verify failed" in body["error"], body["error"]
        assert len(recorder.requests) == 1
    finally:
        recorder.close()


# -- webhooks ----------------------------------------------------------------------------------


def _delivery(server: Server, pid: str) -> dict:
    """The prediction's webhook delivery record once nothing is pending."""
    with server.http() as http:
        wait_finished(http, pid)
        for _ in range(600):
            delivery = http.get(f"/v1/predictions/{pid}").json()["webhook_delivery"]
            if delivery["pending"] == 0 and delivery["attempts"]:
                return delivery
            time.sleep(0.05)
    raise AssertionError(f"delivery still pending: {delivery}")


def _hook(server: Server, url: str) -> tuple[int, dict]:
    with server.http() as http:
        response = http.post(
            "/v1/models/tests/steps/predictions",
            json={"input": {"steps": 0}, "webhook": url, "webhook_events_filter": ["completed"]},
        )
        return response.status_code, response.json()


def test_a_webhook_to_a_denied_address_is_refused(
    strict: Server, dns: tuple[ScriptedDNS, Path], pair: tuple[Recorder, Recorder]
) -> None:
    resolver, _ = dns
    resolver.scripts["denied-hook.policy.test"] = ["127.0.0.2"]
    _, refused = pair
    status, body = _hook(strict, f"http://127.0.0.2:{refused.port}/hook")
    assert status == 422
    assert (
        "refers to an address in a denied range (127.0.0.2 in 127.0.0.2/32), which this server does not send "
        "webhooks to; see --webhook-deny-cidr" in body["detail"]
    )
    status, body = _hook(strict, f"http://denied-hook.policy.test:{refused.port}/hook")
    assert status == 201, body
    delivery = _delivery(strict, body["id"])
    assert delivery["failed"] == 1 and delivery["delivered"] == 0
    assert (
        "denied-hook.policy.test resolves to an address in a denied range (127.0.0.2 in 127.0.0.2/32)"
        in (delivery["last_error"])
    )
    assert refused.requests == []


def test_dns_rebinding_cannot_steer_a_webhook(
    strict: Server, dns: tuple[ScriptedDNS, Path], pair: tuple[Recorder, Recorder]
) -> None:
    """As for inputs: the delivery goes to the address that was checked, 127.0.0.1."""
    resolver, _ = dns
    resolver.scripts["rebind-hook.policy.test"] = ["127.0.0.1", "127.0.0.2"]
    allowed, refused = pair
    status, body = _hook(strict, f"http://rebind-hook.policy.test:{allowed.port}/hook")
    assert status == 201, body
    delivery = _delivery(strict, body["id"])
    assert delivery["delivered"] == 1, delivery
    assert refused.requests == []
    assert [(r["method"], r["path"]) for r in allowed.requests] == [("POST", "/hook")]


def test_the_config_file_and_environment_set_the_policy(tmp_path: Path) -> None:
    config = tmp_path / "overture.toml"
    config.write_text('input_allow_private = false\ninput_allow_cidrs = ["127.0.0.1/32"]\n')
    srv = Server(tmp_path / "overture-data", "--config", str(config))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OVERTURE_WEBHOOK_DENY_CIDRS", "127.0.0.0/30, ::1/128")
        srv.start()
    try:
        status, body = _create(srv, "http://127.0.0.3:9/a.wav")
        assert status == 422 and "refers to a private address (127.0.0.3)" in body["detail"]
        assert _create(srv, "http://127.0.0.1:9/a.wav")[0] == 201  # the allow range
        status, body = _hook(srv, "http://[::1]:9/hook")
        assert status == 422 and "an address in a denied range (::1 in ::1/128)" in body["detail"]
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("options", "config", "words"),
    [
        (["--input-deny-cidr", "10.0.0.0/33"], "", "10.0.0.0/33"),
        (["--webhook-allow-cidr", "not-a-range"], "", "not-a-range"),
        ([], 'input_deny_cidrs = ["169.254.0.0/99"]\n', "169.254.0.0/99"),
        ([], 'input_deny_cidrs = "10.0.0.0/8"\n', "input_deny_cidrs must be a list of ranges"),
        ([], 'webhook_allow_private = "no"\n', "webhook_allow_private must be true or false, not 'no'"),
        ([], "input_allow_private = \n", "--config"),
    ],
)
def test_a_policy_the_server_cannot_read_stops_it_at_start_up(
    tmp_path: Path, options: list[str], config: str, words: str
) -> None:
    """A typo in a range or a config value is said before the server serves, not found by a
    refused (or worse, an allowed) request later."""
    config_file = tmp_path / "overture.toml"
    config_file.write_text(config)
    serve = [
        sys.executable,
        "-m",
        "overture",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--config",
        str(config_file),
    ]
    wide = {**os.environ, "COLUMNS": "1000"}  # so that rich does not wrap the message inside its error box
    result = subprocess.run(serve + options, capture_output=True, text=True, timeout=60, env=wide)
    assert result.returncode == 2 and words in result.stderr, result.stderr
