"""FATE components as plug-ins: a DSL `module` name maps to a `Component` subclass."""
