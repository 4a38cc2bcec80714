"""FATE Flow on taskhub (seed 004): DSL jobs whose components run as ordinary taskhub tasks."""
