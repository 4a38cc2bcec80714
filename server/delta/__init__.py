"""Delta tasks (seed 000, "Delta face II"): delta-task's own tasks, run across the nodes that hold their data."""
