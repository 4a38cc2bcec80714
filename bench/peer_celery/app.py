"""The Celery side of `make bench-peer`. Imported only by the peer venv (never by taskhub).

Configuration, kept visible for fairness: Redis as broker and result backend, prefork pool,
concurrency given by the bench (= taskhub's Python workers), default acknowledgement
(early ack: a message is acked when a worker takes it), results stored in Redis.
"""
import os
import subprocess

from celery import Celery

app = Celery("peer", broker=os.environ["PEER_REDIS_URL"], backend=os.environ["PEER_REDIS_URL"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop():
    return None


@app.task
def true():
    return subprocess.run(["/bin/true"]).returncode
