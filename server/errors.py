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


class NotScheduler(FailedPrecondition):
    """A call only the scheduler serves (agents' streams, node calls) reached a follower server.
    `leader`: where the scheduler is (host:port), also sent as the trailing metadata LEADER_METADATA."""

    def __init__(self, leader: str):
        super().__init__(f"not the scheduler; the scheduler is at {leader}" if leader else
                         "not the scheduler; no server is the scheduler right now (one takes over within seconds)")
        self.leader = leader


LEADER_METADATA = "taskhub-leader"
