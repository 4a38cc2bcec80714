"""Intersection: the rows whose ids both guest and host(s) hold, found without revealing the others.

"rsa" (RSA blind-signature PSI, FATE's default): each host makes an RSA key and sends the public part
to the guest, with final_hash(H(id)^d mod n) of its own ids. The guest blinds H(id) * r^e, the host
signs the blinded values, the guest unblinds (÷ r) to H(id)^d, hashes the same way and matches: the
host never sees a guest id (only blinded values), the guest sees host ids only as signatures.
The guest then tells each host which of its signature hashes were in the intersection.

"raw": one side (`raw_params.join_role`, default guest) receives the other side's ids, optionally
hashed with salt (`use_hash`, `hash_method`), intersects, and sends the result back.

The output is each party's input table restricted to the intersection, in its original order.
"""
from __future__ import annotations

import base64
import hashlib
import secrets

import gmpy2

from server.flow.components import params as P
from server.flow.components.base import Component, ComponentContext, ComponentError, Table
from server.flow.components.data import one_input
from server.flow.components.rsa import rsa_keypair

MODULE = "Intersection"
HASHES = ["md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sm3"]
RSA_DEFAULTS = {"salt": "", "hash_method": "sha256", "final_hash_method": "sha256", "split_calculation": False,
                "random_base_fraction": None, "key_length": 2048, "random_bit": 128}
RAW_DEFAULTS = {"use_hash": False, "salt": "", "hash_method": "none", "base64": False, "join_role": "guest"}
ENCODE_DEFAULTS = {"salt": "", "encode_method": "none", "base64": False}


class Intersection(Component):
    module = MODULE
    roles = ("guest", "host")
    defaults = {
        "intersect_method": "rsa", "random_bit": 128, "sync_intersect_ids": True, "join_role": "guest",
        "only_output_key": False, "with_encode": False, "encode_params": None, "raw_params": None,
        "rsa_params": None, "dh_params": None, "ecdh_params": None, "join_method": "inner_join",
        "new_sample_id": False, "sample_id_generator": "guest", "intersect_cache_param": None, "run_cache": False,
        "cardinality_only": False, "sync_cardinality": False, "cardinality_method": "ecdh", "run_preprocess": False,
        "intersect_preprocess_params": None, "repeated_id_process": False, "repeated_id_owner": "guest",
        "with_sample_id": False, "allow_info_share": False, "info_owner": "guest",
    }

    def __init__(self, params: dict):
        super().__init__(params)
        p = self.params
        p["intersect_method"] = P.choice(MODULE, "intersect_method", p["intersect_method"], ["rsa", "raw"])
        p["join_method"] = P.choice(MODULE, "join_method", p["join_method"], ["inner_join"])
        for flag in ("cardinality_only", "run_preprocess", "run_cache", "new_sample_id", "repeated_id_process",
                     "allow_info_share", "with_sample_id"):
            if P.boolean(MODULE, flag, p[flag]):
                raise ComponentError(f"{MODULE}: {flag}: true is not supported")
        if not P.boolean(MODULE, "sync_intersect_ids", p["sync_intersect_ids"]):
            raise ComponentError(f"{MODULE}: sync_intersect_ids: false is not supported (every party outputs "
                                 "its intersected rows)")
        P.boolean(MODULE, "only_output_key", p["only_output_key"])
        rsa = P.merge_nested(MODULE, "rsa_params", p["rsa_params"], RSA_DEFAULTS)
        rsa["hash_method"] = P.choice(MODULE, "rsa_params.hash_method", rsa["hash_method"],
                                      ["sha256", "sha384", "sha512", "sm3"])
        rsa["final_hash_method"] = P.choice(MODULE, "rsa_params.final_hash_method", rsa["final_hash_method"], HASHES)
        P.number(MODULE, "rsa_params.key_length", rsa["key_length"], minimum=1024, integer=True)
        if "random_bit" in (params or {}) and "random_bit" not in (p["rsa_params"] or {}):
            rsa["random_bit"] = p["random_bit"]     # the deprecated top-level name still counts
        P.number(MODULE, "rsa_params.random_bit", rsa["random_bit"], minimum=1, integer=True)
        if P.boolean(MODULE, "rsa_params.split_calculation", rsa["split_calculation"]):
            raise ComponentError(f"{MODULE}: rsa_params.split_calculation: true is not supported")
        if rsa["random_base_fraction"] is not None:
            P.number(MODULE, "rsa_params.random_base_fraction", rsa["random_base_fraction"], minimum=0, exclusive=True)
        self.rsa = rsa
        self.raw = self._raw_params(p)
        for name in ("hash_method", "final_hash_method") if p["intersect_method"] == "rsa" else ("hash_method",):
            method = (self.rsa if p["intersect_method"] == "rsa" else self.raw)[name]
            if method != "none" and method not in hashlib.algorithms_available:
                raise ComponentError(f"{MODULE}: hash method {method} is not available on this machine")

    def _raw_params(self, p: dict) -> dict:
        """raw_params, or (FATE's deprecated spelling) with_encode + encode_params + join_role."""
        if P.boolean(MODULE, "with_encode", p["with_encode"]):
            enc = P.merge_nested(MODULE, "encode_params", p["encode_params"], ENCODE_DEFAULTS)
            raw = {"use_hash": enc["encode_method"] != "none", "salt": enc["salt"],
                   "hash_method": enc["encode_method"], "base64": enc["base64"], "join_role": p["join_role"]}
        else:
            raw = P.merge_nested(MODULE, "raw_params", p["raw_params"], RAW_DEFAULTS)
            if p["raw_params"] is None or "join_role" not in p["raw_params"]:
                raw["join_role"] = p["join_role"]
        raw["join_role"] = P.choice(MODULE, "raw_params.join_role", raw["join_role"], ["guest", "host"])
        raw["hash_method"] = P.choice(MODULE, "raw_params.hash_method", raw["hash_method"], ["none"] + HASHES)
        P.boolean(MODULE, "raw_params.use_hash", raw["use_hash"])
        if raw["use_hash"] and raw["hash_method"] == "none":
            raise ComponentError(f"{MODULE}: raw_params.use_hash is true but hash_method is none")
        return raw

    # ------------------------------------------------------------------------------------------
    def run(self, ctx: ComponentContext) -> None:
        if not self.need_run:
            return self.passthrough(ctx)
        table = one_input(MODULE, ctx.input_tables("data"), "data")
        ids = [row[0] for row in table.rows()]
        if len(set(ids)) != len(ids):
            raise ComponentError(f"{MODULE}: input table {table.namespace}.{table.name} has repeated ids")
        if ctx.role not in ("guest", "host"):
            raise ComponentError(f"{MODULE}: runs on guest and host only, not {ctx.role}")
        method = self.params["intersect_method"]
        if method == "rsa":
            common = rsa_guest(ctx, ids, self.rsa) if ctx.role == "guest" else rsa_host(ctx, ids, self.rsa)
        else:
            common = raw_intersect(ctx, ids, self.raw)
        self._write(ctx, table, common)

    def _write(self, ctx: ComponentContext, table: Table, common: set[str]) -> None:
        if self.params["only_output_key"]:
            rows = [[row[0]] for row in table.rows() if row[0] in common]
            schema = {"sid": table.schema.get("sid", "id"), "header": []}
        else:
            rows = [row for row in table.rows() if row[0] in common]
            schema = table.schema
        ctx.write_table(rows, schema)
        ctx.summary({"intersect_num": len(rows), "intersect_rate": len(rows) / table.count if table.count else 0.0})
        ctx.log(f"{MODULE}: {len(rows)} of {table.count} ids in the intersection")


# -- hashing ------------------------------------------------------------------------------------
def digest(method: str, text: str, *, as_base64: bool = False) -> str:
    raw = hashlib.new(method, text.encode()).digest()
    return base64.b64encode(raw).decode() if as_base64 else raw.hex()


def hash_to_int(method: str, salt: str, sid: str, n: int) -> gmpy2.mpz:
    return gmpy2.mpz(int.from_bytes(hashlib.new(method, (sid + salt).encode()).digest(), "big")) % n


# -- RSA ------------------------------------------------------------------------------------------
def rsa_host(ctx: ComponentContext, ids: list[str], rsa: dict) -> set[str]:
    fed = ctx.federation
    key = rsa_keypair(rsa["key_length"])
    fed.remote(key.public, "rsa_public_key", "intersect", "guest", 0)
    # own ids, signed and hashed: the guest can match them only with the signatures it obtains
    own = {digest(rsa["final_hash_method"],
                  str(key.private_op(hash_to_int(rsa["hash_method"], rsa["salt"], s, key.n)))): s for s in ids}
    fed.remote(list(own), "host_signed_ids", "intersect", "guest", 0)
    blinded = fed.get("guest_blinded_ids", "intersect", "guest", 0)[0]
    ctx.check_cancelled()
    fed.remote([int(key.private_op(b)) for b in blinded], "guest_signed_ids", "intersect", "guest", 0)
    common = fed.get("intersect_ids", "intersect", "guest", 0)[0]
    return {own[h] for h in common if h in own}


def rsa_guest(ctx: ComponentContext, ids: list[str], rsa: dict) -> set[str]:
    fed = ctx.federation
    hosts = len(ctx.roles.get("host", []))
    if hosts == 0:
        raise ComponentError(f"{MODULE}: the job has no host to intersect with")
    keys = fed.get("rsa_public_key", "intersect", "host")
    host_hashes = fed.get("host_signed_ids", "intersect", "host")
    matched_per_host = []       # host index -> {guest id: that host's signature hash}
    for h in range(hosts):
        n, e = gmpy2.mpz(keys[h]["n"]), keys[h]["e"]
        rs = _blinding_factors(len(ids), n, rsa)
        blinded = [int(hash_to_int(rsa["hash_method"], rsa["salt"], s, n) * gmpy2.powmod(r, e, n) % n)
                   for s, r in zip(ids, rs)]
        fed.remote(blinded, "guest_blinded_ids", "intersect", "host", h)
        signed = fed.get("guest_signed_ids", "intersect", "host", h)[0]
        ctx.check_cancelled()
        theirs = set(host_hashes[h])
        matched = {}
        for s, sig, r in zip(ids, signed, rs):
            final = digest(rsa["final_hash_method"], str(gmpy2.mpz(sig) * gmpy2.invert(r, n) % n))
            if final in theirs:
                matched[s] = final
        matched_per_host.append(matched)
    common = set(ids)
    for matched in matched_per_host:
        common &= set(matched)
    for h, matched in enumerate(matched_per_host):
        fed.remote(sorted(matched[s] for s in common), "intersect_ids", "intersect", "host", h)
    return common


def _blinding_factors(count: int, n: gmpy2.mpz, rsa: dict) -> list[gmpy2.mpz]:
    """Random r (random_bit bits, invertible mod n); with random_base_fraction, a pool reused cyclically."""
    pool = count
    if rsa["random_base_fraction"]:
        pool = max(1, int(count * min(max(rsa["random_base_fraction"], 0.01), 1.0)))
    rs = []
    while len(rs) < pool:
        r = gmpy2.mpz(secrets.randbits(rsa["random_bit"]) | 1)
        if r > 1 and gmpy2.gcd(r, n) == 1:
            rs.append(r)
    return [rs[i % pool] for i in range(count)]


# -- raw ------------------------------------------------------------------------------------------
def raw_intersect(ctx: ComponentContext, ids: list[str], raw: dict) -> set[str]:
    """The joiner (raw_params.join_role) receives the other side's (hashed) ids and returns the intersection.
    With several hosts, a guest joiner intersects every host's ids; host joiners each join with the guest
    and the guest keeps the ids every host returned."""
    fed = ctx.federation
    encode = ((lambda s: digest(raw["hash_method"], s + raw["salt"], as_base64=raw["base64"]))
              if raw["use_hash"] else (lambda s: s))
    mine = {encode(s): s for s in ids}
    other = "host" if ctx.role == "guest" else "guest"
    peers = -1 if other == "host" else 0          # the guest talks to every host; a host to the guest
    if not ctx.roles.get(other):
        raise ComponentError(f"{MODULE}: the job has no {other} to intersect with")
    common = set(mine)
    if ctx.role == raw["join_role"]:
        for theirs in fed.get("raw_ids", "intersect", other, peers):
            common &= set(theirs)
        fed.remote(sorted(common), "raw_intersect_ids", "intersect", other, peers)
    else:
        fed.remote(list(mine), "raw_ids", "intersect", other, peers)
        for theirs in fed.get("raw_intersect_ids", "intersect", other, peers):
            common &= set(theirs)
    return {mine[k] for k in common}
