"""The RPC rule table covers every RPC of every service in the protos (from the generated descriptors)."""
from __future__ import annotations

import importlib
import pkgutil

import taskhub.v1

from server.auth import GRANTS, RULES


def all_rpcs() -> list[str]:
    rpcs = []
    for info in pkgutil.iter_modules(taskhub.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"taskhub.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            rpcs.extend(f"/{service.full_name}/{m.name}" for m in service.methods)
    return rpcs


def test_every_rpc_has_a_rule():
    rpcs = all_rpcs()
    assert len(rpcs) >= 27, rpcs  # four services at least
    missing = [r for r in rpcs if r not in RULES]
    assert not missing, f"RPCs with no entry in server/auth.py RULES (they would be refused to everyone): {missing}"


def test_every_rule_names_a_real_rpc_and_role():
    rpcs = set(all_rpcs())
    assert not [m for m in RULES if m not in rpcs], "rules for RPCs that do not exist"
    roles = set().union(*GRANTS.values())
    assert all(rule.role in roles for rule in RULES.values())
