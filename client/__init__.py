"""taskhub's Python SDK: the typed gRPC client, the seed faces, and the task context."""
from .client import TaskhubClient, make_spec, status_name, status_value
from .context import Cancelled, TaskContext, current
from .delta import CommandTask, DeltaNode, PythonTask, Task

__all__ = ["TaskhubClient", "make_spec", "status_name", "status_value", "Cancelled", "TaskContext", "current",
           "CommandTask", "DeltaNode", "PythonTask", "Task"]
