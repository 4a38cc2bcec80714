"""DSL `module` name -> Component class. Modules are imported on first use, so a task only loads
(and needs the dependencies of) the component it runs."""
from __future__ import annotations

import importlib

from server.flow.components.base import Component, ComponentError

# module name -> "python module:class"
MODULES = {
    "DataTransform": "server.flow.components.data_transform:DataTransform",
    "Intersection": "server.flow.components.intersection:Intersection",
    "FeatureScale": "server.flow.components.feature_scale:FeatureScale",
    "HeteroLR": "server.flow.components.hetero_lr:HeteroLR",
    "HomoLR": "server.flow.components.homo_lr:HomoLR",
    "Evaluation": "server.flow.components.evaluation:Evaluation",
}


def known_modules() -> list[str]:
    return sorted(MODULES)


def component_class(module: str) -> type[Component]:
    target = MODULES.get(module)
    if target is None:
        raise ComponentError(f"unknown component module {module!r}; known: {', '.join(known_modules())}")
    py_module, cls = target.split(":")
    return getattr(importlib.import_module(py_module), cls)
