"""The worker's HTTP transport when a target URL policy is configured: connections go only to
addresses the policy checked.

httpx would resolve a model server's name again when it connects, after the worker's pre-call
check (``UrlPolicy.check_call``) resolved it: a hostile DNS name could answer an allowed address
to the check and 169.254.169.254 or 127.0.0.1 to the connection (DNS rebinding). Here httpcore's
network backend does the resolving: each new TCP connection resolves the name once through the
policy (``UrlPolicy.addresses``: its resolver, bounded; every address checked with its rules),
refuses with ``ModelCallError('url_refused')`` or connects to one of those literal addresses.
httpcore takes the TLS server name and the Host header from the request URL, so they keep the
name. A pooled connection is reused without resolving again: it goes to the address it was made
to, which was checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import httpcore
import httpx

from orchestrator.url_policy import UnresolvableHost, UrlPolicy


class PinnedBackend(httpcore.NetworkBackend):
    """A network backend whose ``connect_tcp`` connects only to addresses ``policy`` admitted."""

    def __init__(self, policy: UrlPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            addresses = self._policy.addresses(host, timeout)  # ModelCallError('url_refused')
        except UnresolvableHost:
            raise httpcore.ConnectError(f"host {host} does not resolve") from None
        error: Exception = httpcore.ConnectError(f"host {host} has no address")
        for address in addresses:  # in resolver order, within one connect timeout in all
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"could not connect to {host} in time")
            try:
                return self._inner.connect_tcp(
                    str(address), port, timeout=left, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise httpcore.ConnectError("a model server is not reached through a unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def pinned_transport(
    policy: UrlPolicy, limits: httpx.Limits, *, backend: httpcore.NetworkBackend | None = None
) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (its request, response and exception mapping: timeouts stay
    ``httpx.TimeoutException`` and so on) whose connection pool connects through ``PinnedBackend``.
    An ``httpx.Client`` given this transport takes no proxy from the environment (a proxy would
    resolve the name itself)."""
    transport = httpx.HTTPTransport(limits=limits)
    transport._pool = httpcore.ConnectionPool(  # the one pool argument httpx does not expose
        ssl_context=httpx.create_ssl_context(),  # SSL_CERT_FILE / SSL_CERT_DIR still apply
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PinnedBackend(policy, backend),
    )
    return transport


def http_client(limits: httpx.Limits, policy: UrlPolicy | None) -> httpx.Client:
    """The worker's client for model calls (no redirects); pinned to checked addresses when a
    URL policy is given."""
    if policy is None:
        return httpx.Client(limits=limits, follow_redirects=False)
    return httpx.Client(transport=pinned_transport(policy, limits), follow_redirects=False)
