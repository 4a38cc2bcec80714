"""The route table of `serve --fate-route-table`, in FATE rollsite's format:

    {"route_table": {"10000": {"default": [{"ip": "10.0.0.2", "port": 50061}]}, ...},
     "permission": {"default_allow": true},
     "tls": {"cert": "party-9999.pem", "key": "party-9999.key", "ca": "ca.pem"}}

ip/port is the party's taskhub site address (gRPC). This server's own entry is where it listens
for the other parties. "tls" (top level, or per route to override) names this server's
certificate and key and the CA that signs every party's certificate; without it, the `--tls-*`
flags are used. `"tls": false` on a route means plaintext, allowed only on loopback. A party is
identified by its certificate: its common name or a DNS subject alternative name `party-<id>`.
Relative paths are relative to the table's directory.

"permission": rollsite's only key is `default_allow`, which lets it send a party it has no entry for
(or a role without its own hop) to the table's "default" entry, an exchange. Here every party is
reached directly and must have its own entry; a call from a party without one is refused whatever
`default_allow` says, so `false` is what this server always does and `true` has nothing to open.
A "default" entry (an exchange) and any other permission key are refused, naming the key.
"""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass


class RouteError(ValueError):
    """The table cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    ca: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for what, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
            except OSError as e:
                raise RouteError(f"cannot read the TLS {what} {path}: {e.strerror}") from None
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class Route:
    party_id: int
    ip: str
    port: int
    tls: TlsFiles | None       # None: plaintext (loopback only)

    @property
    def target(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ip)


def party_name(party_id: int) -> str:
    """What a party's certificate must name (CN or DNS SAN), and what its server is dialled as."""
    return f"party-{party_id}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RouteTable:
    own_party: int
    routes: dict[int, Route]          # every party but this server's own
    listen: Route | None              # this server's own entry: where other parties reach it
    default_allow: bool = True

    def route(self, party_id: int) -> Route:
        try:
            return self.routes[party_id]
        except KeyError:
            raise RouteError(f"party {party_id} has no route in the route table of party {self.own_party}") from None

    def is_local(self, party_id: int) -> bool:
        return party_id == self.own_party


def _tls(spec, base: str, where: str, fallback: TlsFiles | None) -> TlsFiles | None | bool:
    if spec is False:
        return None
    if spec is None or spec is True:
        return fallback if fallback is not None else False   # False: none given anywhere
    if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) and spec.get(k) for k in ("cert", "key", "ca")):
        raise RouteError(f"{where}: \"tls\" must be false or {{\"cert\": ..., \"key\": ..., \"ca\": ...}}")
    return TlsFiles(*(os.path.join(base, spec[k]) for k in ("cert", "key", "ca")))


def parse(text: str, own_party: int, base_dir: str = ".", flags: TlsFiles | None = None) -> RouteTable:
    """The table of party `own_party`; `flags` is the `--tls-*` fallback. RouteError says what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RouteError(f"not JSON: {e}") from None
    table = doc.get("route_table") if isinstance(doc, dict) else None
    if not isinstance(table, dict) or not table:
        raise RouteError('it needs a "route_table" object: {"<party_id>": {"default": [{"ip": ..., "port": N}]}}')
    top = _tls(doc.get("tls"), base_dir, "the table", flags)
    routes: dict[int, Route] = {}
    for key, entry in table.items():
        where = f"route_table[{key!r}]"
        if key == "default":
            raise RouteError(f"{where}: a default route (rollsite's hop to an exchange for parties without an entry)"
                             " is not supported: give each party its own entry, with its server's address")
        try:
            party = int(key)
        except ValueError:
            raise RouteError(f"{where}: a party id must be a number") from None
        hops = entry.get("default") if isinstance(entry, dict) else None
        if not isinstance(hops, list) or not hops or not isinstance(hops[0], dict):
            raise RouteError(f'{where}: needs "default": [{{"ip": ..., "port": N}}]')
        hop = hops[0]
        ip, port = hop.get("ip"), hop.get("port")
        if not isinstance(ip, str) or not ip or not isinstance(port, int) or not 0 < port < 65536:
            raise RouteError(f"{where}: ip must be a host and port a number between 1 and 65535")
        tls = _tls(hop["tls"], base_dir, where, None) if "tls" in hop else top
        if tls is False:
            tls = None if is_loopback(ip) else False
        if tls is False or (tls is None and not is_loopback(ip)):
            raise RouteError(f"{where}: {ip} is not loopback, so mutual TLS is required: give \"tls\" "
                             "(cert, key, ca) in the table or --tls-cert/--tls-key/--tls-client-ca")
        routes[party] = Route(party, ip, port, tls)
    listen = routes.pop(own_party, None)
    if routes and listen is None:
        raise RouteError(f"the table has no entry for this server's own party {own_party}: "
                         "it says where the other parties reach this server")
    return RouteTable(own_party, routes, listen, _default_allow(doc.get("permission")))


def _default_allow(permission) -> bool:
    if permission is None:
        return True
    if not isinstance(permission, dict):
        raise RouteError('"permission" must be an object: {"default_allow": true | false}')
    unknown = sorted(set(permission) - {"default_allow"})
    if unknown:
        raise RouteError(f'"permission.{unknown[0]}" is not supported: a party is allowed by having an entry in'
                         ' "route_table" (and a certificate naming it); only "default_allow" may be given')
    allow = permission.get("default_allow", True)
    if not isinstance(allow, bool):
        raise RouteError(f'"permission.default_allow" must be true or false, got {allow!r}')
    return allow


def load(path: str, own_party: int, flags: TlsFiles | None = None) -> RouteTable:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise RouteError(f"cannot read {path}: {e.strerror}") from None
    return parse(text, own_party, os.path.dirname(os.path.abspath(path)), flags)
