"""Errors the domain raises; server/api/errors.py maps each to one gRPC status code."""


class TaskhubError(Exception):
    """Base: a request that cannot be served as asked. The message is for a person."""


class NotFound(TaskhubError):
    pass


class InvalidArgument(TaskhubError):
    pass


class FailedPrecondition(TaskhubError):
    pass


class AlreadyExists(TaskhubError):
    pass


class PermissionDenied(TaskhubError):
    pass


class Unauthenticated(TaskhubError):
    pass


class ResourceExhausted(TaskhubError):
    pass


class Unavailable(TaskhubError):
    pass


class DeadlineExceeded(TaskhubError):
    pass
