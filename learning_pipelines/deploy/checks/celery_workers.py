"""The check of the Celery workers: enough of them answer on the broker, listening on the deployment's queue."""

from __future__ import annotations

import warnings

import celery

from learning_pipelines.deploy.checks.session import CONNECT_TIMEOUT_S, Outcome, Session
from learning_pipelines.deploy.redaction import shown_url
from learning_pipelines.settings import CELERY_BROKER_ENV

CELERY_REPLY_TIMEOUT_S = 3


def check_celery_workers(session: Session) -> Outcome:
    target = session.target
    broker = shown_url(target.broker_url)
    app = celery.Celery(broker=target.broker_url, set_as_current=False)
    app.conf.broker_connection_timeout = CONNECT_TIMEOUT_S
    start = (f"start them: `make stack` (`learning-pipelines stack start`), or `dagster-celery worker start -A "
             f"dagster_celery.app -y <celery.yaml> -q {target.queue}` with {CELERY_BROKER_ENV} set"
             + session.logs("worker_*.log"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0.5, interval_step=0.5)
                # Each worker's own reply, not inspect()'s merge by node name: two workers with one name (two
                # stacks on one broker) must count twice.
                replies = app.control.broadcast("active_queues", reply=True, timeout=CELERY_REPLY_TIMEOUT_S,
                                                connection=connection)
        except Exception as error:  # noqa: BLE001 - kombu and amqp raise their own hierarchies for a broker that refuses
            return Outcome(False, f"cannot reach the broker {broker}: {session.reason(error)}",
                           f"start RabbitMQ, or fix {CELERY_BROKER_ENV}")
    ours, others = [], 0
    for reply in replies or []:
        for node, queues in reply.items():
            if any(queue.get("name") == target.queue for queue in queues or []):
                ours.append(node)
            else:
                others += 1
    detail = (f"{len(ours)} worker(s) listening on queue {target.queue} (need >= {target.min_workers})"
              + (f": {', '.join(sorted(ours))}" if ours else "")
              + (f"; {others} other worker(s) on other queues" if others else ""))
    if len(ours) < target.min_workers:
        return Outcome(False, detail, start)
    return Outcome(True, detail)
