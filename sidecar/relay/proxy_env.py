"""Which egress proxy an upstream request goes through, decided the way curl decides it.

``--upstream-proxy`` wins and applies to every upstream host. When it is unset, the standard
variables apply, read from an injected environ mapping (never ``os.environ`` directly, so
tests stay hermetic): ``https_proxy`` / ``HTTPS_PROXY`` for https:// upstreams, ``http_proxy``
/ ``HTTP_PROXY`` for http:// ones, then ``all_proxy`` / ``ALL_PROXY``; lower case first, as
curl reads them. ``no_proxy`` / ``NO_PROXY`` exempts hosts (see ``NoProxy``). Loopback is not
exempt unless listed, as with curl (Go's client exempts it; the two differ here).

Proxy URLs may carry credentials; ``redacted`` and ``where`` are the only forms that may
appear in a log line or an error message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from yarl import URL

from sidecar.settings import SettingsError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEME_VARIABLES = {
    "https": ("https_proxy", "HTTPS_PROXY"),
    "http": ("http_proxy", "HTTP_PROXY"),
}
_ALL_VARIABLES = ("all_proxy", "ALL_PROXY")
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")


def redacted(url: str) -> str:
    """The URL with its password replaced by ``***`` (the user name is kept)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def where(proxy: URL) -> str:
    """``host:port`` of a proxy, the form error messages use: never any credentials."""
    host = proxy.raw_host or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{proxy.port}"


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NoProxy:
    """``NO_PROXY`` as curl reads it: comma- or space-separated, case-insensitive entries.

    ``*`` exempts every host. A name matches itself and every subdomain (``example.com``
    matches ``api.example.com``); a leading ``.`` or ``*.`` is ignored. An IP address matches
    itself, a CIDR block (``10.0.0.0/8``, ``fd00::/8``) every address in it. A ``:port``
    suffix is ignored: exemptions are per host.
    """

    everything: bool = False
    names: tuple[str, ...] = ()
    addresses: tuple[IpAddress, ...] = ()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> NoProxy:
        names: list[str] = []
        addresses: list[IpAddress] = []
        networks: list[IpNetwork] = []
        everything = False
        for entry in raw.replace(",", " ").lower().split():
            if entry == "*":
                everything = True
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    continue  # as curl: an entry it cannot read exempts nothing
            elif (address := _ip(_without_port(entry))) is not None:
                addresses.append(address)
            else:
                name = _without_port(entry).removeprefix("*").lstrip(".").rstrip(".")
                if name:
                    names.append(name)
        return cls(everything, tuple(names), tuple(addresses), tuple(networks))

    def exempts(self, host: str) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        address = _ip(host)
        if address is not None:
            return address in self.addresses or any(address in n for n in self.networks)
        return any(host == name or host.endswith("." + name) for name in self.names)


def _without_port(entry: str) -> str:
    if entry.startswith("["):  # [v6]:port
        return entry.partition("]")[0] + "]"
    if entry.count(":") == 1:  # name:port or v4:port; a bare v6 address has several colons
        return entry.partition(":")[0]
    return entry


def _proxy_url(raw: str, variable: str) -> URL:
    """Parse a proxy variable's value; curl's default scheme is http://."""
    text = raw.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"{variable}: invalid value {redacted(raw.strip())!r} "
            "(expected an http:// or https:// proxy URL)"
        )
    return URL(text)


@dataclass(frozen=True, slots=True)
class ProxyChoice:
    """The egress proxy for each upstream URL: explicit, from the environment, or none."""

    explicit: URL | None = None
    by_scheme: Mapping[str, URL] = field(default_factory=dict)
    no_proxy: NoProxy = field(default_factory=NoProxy)

    @classmethod
    def from_settings(cls, upstream_proxy: str | None, environ: Mapping[str, str]) -> ProxyChoice:
        """Raises ``SettingsError`` naming the variable when a proxy variable is unusable."""
        if upstream_proxy:
            return cls(explicit=_proxy_url(upstream_proxy, "--upstream-proxy"))
        fallback = _first(environ, _ALL_VARIABLES)
        by_scheme: dict[str, URL] = {}
        for scheme, variables in _SCHEME_VARIABLES.items():
            found = _first(environ, variables) or fallback
            if found is not None:
                by_scheme[scheme] = _proxy_url(found[1], found[0])
        no_proxy = _first(environ, _NO_PROXY_VARIABLES)
        return cls(None, by_scheme, NoProxy.parse(no_proxy[1]) if no_proxy else NoProxy())

    def for_url(self, url: URL) -> URL | None:
        if self.explicit is not None:
            return self.explicit
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or self.no_proxy.exempts(url.raw_host or ""):
            return None
        return proxy


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of ``names`` set to a non-empty value, with that value."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None
