"""Where the service may send a case: the URL policy of every model server it calls.

Checked twice: when an admin registers a target (POST /register_agent: refused is a 422 on
``url``) and again by the worker before every model call (refused is a failed attempt of kind
``url_refused``, and the job fails over). The rules, in order:

1. Only ``http`` and ``https``.
2. The host is resolved (a literal address is taken as is; a name through the system resolver,
   within ``TARGET_URL_RESOLVE_TIMEOUT_SECONDS``) and **every** address it resolves to is
   checked, so a DNS name that points inside is judged by where it points. A name that does not
   resolve is refused in production; in development it passes (nothing can be reached through
   it, and the check before each call resolves it again).
3. Link-local and cloud-metadata addresses are always refused (``BLOCKED_NETWORKS``), whatever
   the allowlist says.
4. Loopback is refused when ``ENV=production``, unless an allowlist CIDR covers it.
5. With ``TARGET_URL_ALLOWLIST`` set, the host must match one of its entries: an exact host
   name, a domain (``.example.org`` or ``*.example.org``: any name under it), or a CIDR / address
   that holds every resolved address.

The rules (``evaluate``) are pure; resolution is the injected ``Resolver``. The worker's
connections go only to addresses these rules admitted: its HTTP transport
(``modelreasoner.pinned_transport``) does not let the HTTP client resolve the name; each new
connection resolves it through ``UrlPolicy.addresses`` (the policy's resolver), checks every
address with ``evaluate`` and connects to one of them by its literal address (TLS SNI and the
Host header keep the name). A DNS answer that changes between the pre-call check and the
connection (rebinding) is therefore refused (``url_refused``) or connects where the rules allow,
never elsewhere (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from orchestrator.errors import BadRequest, ModelCallError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, float], list[IPAddress]]
"""(host name, timeout in s) -> its addresses; raises ``UnresolvableHost``."""

SCHEMES = ("http", "https")

BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), why)
    for cidr, why in (
        ("169.254.0.0/16", "link-local (cloud metadata 169.254.169.254 lives here)"),
        ("fe80::/10", "IPv6 link-local"),
        ("fd00:ec2::254/128", "the AWS metadata service (IPv6)"),
        ("100.100.100.200/32", "the Alibaba Cloud metadata service"),
        ("0.0.0.0/8", "'this host' (connecting to 0.0.0.0 reaches loopback)"),
        ("::/128", "the unspecified address"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "IPv6 multicast"),
        ("255.255.255.255/32", "broadcast"),
    )
)
"""Refused always: no allowlist entry lets a case go to these."""

VERDICT_CACHE_SECONDS = 5.0
"""How long the worker reuses one host's verdict before resolving it again (s): a model call must
not pay a DNS lookup each time, and a name that turns bad is refused within this long."""
VERDICT_CACHE_MAX = 1024
"""Entries kept at most (the catalogue has a few dozen targets); past this the cache restarts."""
RESOLVER_THREADS = 4
"""Threads that run blocking getaddrinfo calls so each can be abandoned at its timeout."""


class UnresolvableHost(Exception):
    """The host name did not resolve (or not in time)."""


class UrlRefused(BadRequest):
    """The URL is not allowed by the target URL policy."""

    code = "url_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"url refused: {reason}", field="url")
        self.reason = reason


@dataclass(frozen=True)
class Rules:
    """The policy's configuration: what an allowlist admits and whether loopback is allowed."""

    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    """Suffixes with their leading dot: ``.example.org``."""
    networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = True
    allow_unresolvable: bool = True
    """Development: a name that does not resolve (yet) passes; it cannot be reached either."""

    @property
    def has_allowlist(self) -> bool:
        return bool(self.hosts or self.domains or self.networks)


def parse_entry(entry: str) -> str | IPNetwork:
    """One TARGET_URL_ALLOWLIST entry: a network (``10.0.0.0/8``, ``10.1.2.3``), a domain
    (``.example.org`` / ``*.example.org``, returned as ``.example.org``) or a host name.
    ValueError names what is wrong."""
    text = entry.strip().lower()
    if not text:
        raise ValueError("an entry is empty")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = "." + text[2:] if text.startswith("*.") else text
    label = name.removeprefix(".")
    if not label or any(not part or len(part) > 63 for part in label.split(".")):
        raise ValueError(f"{entry!r} is not a host, domain or CIDR")
    if any(not (c.isalnum() or c in "-.") for c in label):
        raise ValueError(f"{entry!r} is not a host, domain or CIDR")
    return name


def rules_from(entries: Iterable[str], *, development: bool) -> Rules:
    """The rules of TARGET_URL_ALLOWLIST ``entries``; ``development`` allows loopback and names
    that do not resolve."""
    hosts, domains, networks = set(), [], []
    for entry in entries:
        parsed = parse_entry(entry)
        if isinstance(parsed, str):
            (domains.append(parsed) if parsed.startswith(".") else hosts.add(parsed))
        else:
            networks.append(parsed)
    return Rules(frozenset(hosts), tuple(domains), tuple(networks), development, development)


def normalise(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def literal_address(host: str) -> IPAddress | None:
    try:
        return normalise(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def evaluate(host: str, addresses: list[IPAddress], rules: Rules) -> str | None:
    """Why ``host`` (which resolved to ``addresses``) is refused, or None if it may be called."""
    if not addresses:
        return f"host {host} resolves to no address"
    addresses = [normalise(a) for a in addresses]
    for address in addresses:
        for network, why in BLOCKED_NETWORKS:
            if address.version == network.version and address in network:
                return f"host {host} resolves to {address}: {why}"
    covered = [any(a.version == n.version and a in n for n in rules.networks) for a in addresses]
    for address, is_covered in zip(addresses, covered, strict=True):
        if address.is_loopback and not rules.allow_loopback and not is_covered:
            return f"host {host} resolves to loopback {address}, refused outside development (ENV=production)"
    if name_allowed(host, rules) or all(covered):
        return None
    return f"host {host} is not in TARGET_URL_ALLOWLIST"


def name_allowed(host: str, rules: Rules) -> bool:
    """No allowlist, or ``host`` is one of its host names or under one of its domains."""
    if not rules.has_allowlist:
        return True
    name = host.lower().rstrip(".")
    return name in rules.hosts or any(name.endswith(d) for d in rules.domains)


@dataclass
class UrlPolicy:
    """The rules plus a resolver with a time bound, and a short cache of verdicts for the
    worker's per-call check."""

    rules: Rules
    resolve: Resolver
    resolve_timeout_s: float
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be called, or None (resolves the host: blocking, bounded)."""
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            return f"scheme {parts.scheme or '(none)'!r} is not http or https"
        host = parts.hostname
        if not host:
            return "the URL has no host"
        literal = literal_address(host)
        if literal is not None:
            return evaluate(host, [literal], self.rules)
        try:
            addresses = self.resolve(host, self.resolve_timeout_s)
        except UnresolvableHost as exc:
            if not self.rules.allow_unresolvable:
                return f"host {host} {exc}"
            return None if name_allowed(host, self.rules) else f"host {host} is not in TARGET_URL_ALLOWLIST"
        return evaluate(host, addresses, self.rules)

    def addresses(self, host: str, timeout_s: float | None = None) -> list[IPAddress]:
        """Where a connection to ``host`` may go: every address it resolves to now (through this
        policy's resolver, within ``resolve_timeout_s`` and ``timeout_s``), all checked. Raise
        ``ModelCallError('url_refused')`` if the rules refuse them, ``UnresolvableHost`` if there
        are none. Never cached: this is the answer a connection is made to."""
        literal = literal_address(host)
        if literal is not None:
            found = [literal]
        else:
            bound = self.resolve_timeout_s if timeout_s is None else min(self.resolve_timeout_s, timeout_s)
            found = self.resolve(host, bound)
        reason = evaluate(host, found, self.rules)
        if reason is not None:
            raise ModelCallError("url_refused", f"url refused by the target URL policy: {reason}")
        return [normalise(a) for a in found]

    def check(self, url: str) -> None:
        """At registration: raise ``UrlRefused`` (422 on ``url``) unless ``url`` may be called."""
        reason = self.refusal(url)
        if reason is not None:
            raise UrlRefused(reason)

    def check_call(self, url: str) -> None:
        """Before a model call: raise ``ModelCallError('url_refused')`` unless ``url`` may be
        called. Verdicts are reused for VERDICT_CACHE_SECONDS."""
        now = self.clock()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and now - cached[0] < VERDICT_CACHE_SECONDS:
            reason = cached[1]
        else:
            reason = self.refusal(url)
            with self._lock:
                if len(self._cache) >= VERDICT_CACHE_MAX:
                    self._cache.clear()
                self._cache[url] = (now, reason)
        if reason is not None:
            raise ModelCallError("url_refused", f"url refused by the target URL policy: {reason}")


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _resolver_pool() -> ThreadPoolExecutor:
    """This process's resolver threads (per pid: a forked RQ job process must not inherit the
    parent's idle-thread bookkeeping without its threads)."""
    pid = os.getpid()
    with _pools_lock:
        pool = _pools.get(pid)
        if pool is None:
            pool = _pools[pid] = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolve")
        return pool


def system_resolver(host: str, timeout_s: float) -> list[IPAddress]:
    """Every address ``host`` resolves to, through getaddrinfo, abandoned after ``timeout_s``
    (getaddrinfo itself has no timeout; a stuck lookup finishes on its pool thread)."""
    future = _resolver_pool().submit(socket.getaddrinfo, host, None, proto=socket.IPPROTO_TCP)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise UnresolvableHost(f"did not resolve within {timeout_s:g} s") from None
    except (OSError, UnicodeError):
        raise UnresolvableHost("does not resolve") from None
    addresses = []
    for info in infos:
        address = literal_address(str(info[4][0]).split("%")[0])
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


def policy_for(settings, resolve: Resolver = system_resolver) -> UrlPolicy:
    """The policy of ``settings`` (TARGET_URL_ALLOWLIST, ENV, TARGET_URL_RESOLVE_TIMEOUT_SECONDS)."""
    rules = rules_from(settings.target_url_allowlist, development=settings.env != "production")
    return UrlPolicy(rules, resolve, settings.target_url_resolve_timeout_seconds)
