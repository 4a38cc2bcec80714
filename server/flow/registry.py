"""DSL module name -> the component class that runs it, and the roles it runs on.

The server never imports component code (it runs in workers); it only needs to know which
modules exist and on which roles they run: elsewhere a component's task is `pass`.
tests/test_flow.py checks that every entry agrees with its class.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import errors
from ..model import module_allowed
from .components.base import ComponentError

ALL = ("guest", "host", "arbiter", "local")
DATA_ROLES = ("guest", "host", "local")


@dataclass(frozen=True)
class Entry:
    path: str                 # "package.module:Class"
    roles: tuple[str, ...]


BUILTIN: dict[str, Entry] = {
    "Reader": Entry("server.flow.components.reader:Reader", DATA_ROLES),
    "DataTransform": Entry("server.flow.components.data_transform:DataTransform", DATA_ROLES),
    "Intersection": Entry("server.flow.components.intersection:Intersection", ("guest", "host")),
    "FeatureScale": Entry("server.flow.components.feature_scale:FeatureScale", DATA_ROLES),
    "HeteroLR": Entry("server.flow.components.hetero_lr:HeteroLR", ("guest", "host", "arbiter")),
    "HomoLR": Entry("server.flow.components.homo_lr:HomoLR", ("guest", "host", "arbiter")),
    "Evaluation": Entry("server.flow.components.evaluation:Evaluation", DATA_ROLES),
    "SampleWeight": Entry("server.flow.components.sample_weight:SampleWeight", DATA_ROLES),
    "HeteroFeatureBinning": Entry("server.flow.components.binning:HeteroFeatureBinning", ("guest", "host")),
    "HeteroFeatureSelection": Entry("server.flow.components.selection:HeteroFeatureSelection", ("guest", "host")),
    "OneHotEncoder": Entry("server.flow.components.one_hot:OneHotEncoder", DATA_ROLES),
    "Probe": Entry("server.flow.components.probe:Probe", ALL),
}


# Older names of built-in modules: FATE 1.6-era DSLs say DataIO (renamed DataTransform in 1.7).
ALIASES: dict[str, str] = {"DataIO": "DataTransform"}


def component_class(module: str):
    """The built-in component class of a DSL module (imported on first use)."""
    import importlib
    entry = BUILTIN.get(ALIASES.get(module, module))
    if entry is None:
        raise ComponentError(f"unknown component module {module!r}; known: {', '.join(sorted(BUILTIN))}")
    path, _, attr = entry.path.partition(":")
    return getattr(importlib.import_module(path), attr)


class Registry:
    def __init__(self, plugins: dict[str, str] | None = None, allowed_modules: list[str] = ()):
        self.entries = dict(BUILTIN)
        self.entries.update({alias: BUILTIN[name] for alias, name in ALIASES.items()})
        for name, path in (plugins or {}).items():
            module = path.partition(":")[0]
            if ":" not in path or not module_allowed(module, list(allowed_modules)):
                raise errors.InvalidArgument(
                    f"flow component {name}={path}: give package.module:Class under an allowed module prefix"
                    f" ({', '.join(allowed_modules) or 'none'}; see --allow-module)")
            self.entries[name] = Entry(path, ALL)

    @property
    def modules(self) -> set[str]:
        return set(self.entries)

    def get(self, module: str) -> Entry:
        return self.entries[module]
