"""Which addresses the server connects to when it fetches a file input or sends a webhook, and
HTTP clients that hold to that at connect time.

A connection's host is resolved once, every address it resolves to is checked, and the socket
goes to a checked address; TLS still names (SNI) and verifies the URL's host, and ``Host`` is the
URL's. Checking first and letting the HTTP client resolve again would let DNS rebinding answer
the second lookup with an address the check never saw.

The built-in rules refuse addresses that are never a file server or a webhook receiver:
unspecified, link-local (cloud metadata lives at 169.254.169.254), multicast and reserved ones.
Private and loopback addresses are allowed unless ``allow_private`` is off, as a self-hosted
server needs them. Allow and deny ranges (CIDR, as in Stripe's Smokescreen) override the rules;
where several ranges hold an address, the longest prefix wins, and a deny wins a tie. IPv4-mapped
(``::ffff:a.b.c.d``) and NAT64 (``64:ff9b::a.b.c.d``) addresses are judged as the IPv4 address
they reach.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Literal

import anyio
import httpcore
import httpx

from overture.config import Settings
from overture.errors import AddressRefused

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_THIS_NETWORK = ip_network("0.0.0.0/8")
_NAT64 = ip_network("64:ff9b::/96")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``fd00::/8`` or a single address; ``ValueError`` names a malformed one."""
    return tuple(ip_network(value, strict=False) for value in values)


def _reached(address: Address) -> Address:
    """The IPv4 address that an IPv4-mapped or NAT64 IPv6 address reaches; else ``address``."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _kind(address: Address) -> str | None:
    """The built-in class of an address that is not a public one, as messages name it."""
    if address.is_unspecified or address in _THIS_NETWORK:
        return "an unspecified"
    if address.is_link_local:
        return "a link-local"
    if address.is_multicast:
        return "a multicast"
    site_local = getattr(address, "is_site_local", False)  # fec0::/10, which Python counts as global
    if address.is_loopback or site_local or not (address.is_reserved or address.is_global):
        return "a private"
    if address.is_reserved:
        return "a reserved"
    return None


def literal_address(host: str | None) -> Address | None:
    """The address a host names without DNS, in any form the resolver reads (``0x7f.1`` too)."""
    if not host:
        return None
    try:
        return ip_address(host)  # IPv6 with a zone too, whether or not the interface exists
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ip_address(infos[0][4][0])


@dataclass(frozen=True)
class AddressPolicy:
    #: Whose options these are, as they are named: ``input`` (``--input-allow-private``) or ``webhook``.
    purpose: str
    #: What the server would do there, for messages: "fetch", "send webhooks to".
    action: str
    allow_private: bool = True
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` is refused ("a link-local address (169.254.169.254), which ..."), or None."""
        address = _reached(address)
        ranges = [(net, True) for net in self.allow] + [(net, False) for net in self.deny]
        matches = [(net, allowed) for net, allowed in ranges if net.version == address.version and address in net]
        if matches:
            net, allowed = max(matches, key=lambda match: (match[0].prefixlen, not match[1]))
            if allowed:
                return None
            return self._because(f"an address in a denied range ({address} in {net})", "deny-cidr")
        kind = _kind(address)
        if kind is None or (kind == "a private" and self.allow_private):
            return None
        return self._because(f"{kind} address ({address})", "allow-private" if kind == "a private" else "allow-cidr")

    def _because(self, what: str, option: str) -> str:
        return f"{what}, which this server does not {self.action}; see --{self.purpose}-{option}"

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is a refused address. A name waits for connect time: it is
        resolved once, where the connection is made."""
        address = literal_address(urllib.parse.unquote(urllib.parse.urlsplit(url).hostname or ""))
        if address is not None and (reason := self.refusal(address)):
            raise AddressRefused(f"refers to {reason}")

    def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of ``host``, all checked: one refused address refuses the host, so that
        no resolver answer can steer the connection to it."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ip_address(info[4][0]) for info in infos))
        for address in addresses:
            if reason := self.refusal(address):
                subject = f"{host} is" if literal_address(host) is not None else f"{host} resolves to"
                raise AddressRefused(f"{subject} {reason}")
        return addresses

    def client(self, timeout: float) -> httpx.Client:
        """A client that connects only to addresses this policy allows. It follows no redirects
        (a caller that does checks each hop) and ignores proxy variables: a proxy would resolve
        the host itself."""
        transport = httpx.HTTPTransport()
        _pin(transport._pool, _PinnedBackend(self))
        return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)

    def async_client(self, timeout: float) -> httpx.AsyncClient:
        """``client()`` for asyncio."""
        transport = httpx.AsyncHTTPTransport()
        _pin(transport._pool, _PinnedAsyncBackend(self))
        return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def _pin(pool: Any, backend: Any) -> None:
    """Give httpx's connection pool (httpcore's) the pinned backend. httpx takes no backend of its
    own and the pool keeps it in a private attribute: should an httpcore release rename it, the
    assignment would silently leave the pool connecting by name, so that is refused instead."""
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"httpcore {httpcore.__version__} keeps its network backend elsewhere; Overture cannot pin connections"
        )
    pool._network_backend = backend


class _PinnedBackend(httpcore.SyncBackend):
    """Opens each TCP connection to an address the policy checked, never to the name itself."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in self.policy.resolve(host, port):
            try:
                return super().connect_tcp(str(address), port, *args, **kwargs)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} has no address")


class _PinnedAsyncBackend(httpcore.AnyIOBackend):
    """``_PinnedBackend`` for asyncio; the lookup runs on a worker thread."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await anyio.to_thread.run_sync(self.policy.resolve, host, port):
            try:
                return await super().connect_tcp(str(address), port, *args, **kwargs)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} has no address")


#: What the server does at each kind of address, as refusals name it.
_ACTIONS = {"input": "fetch", "webhook": "send webhooks to"}


def address_policy(settings: Settings, purpose: Literal["input", "webhook"]) -> AddressPolicy:
    """The policy the ``--<purpose>-allow-private``, ``-allow-cidr`` and ``-deny-cidr`` options set."""
    return AddressPolicy(
        purpose,
        _ACTIONS[purpose],
        allow_private=getattr(settings, f"{purpose}_allow_private"),
        allow=getattr(settings, f"{purpose}_allow_cidrs"),
        deny=getattr(settings, f"{purpose}_deny_cidrs"),
    )
