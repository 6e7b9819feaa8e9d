"""The Celery app the integration tests run in worker containers (mounted at /app).

Environment:
  CELERY_BROKER_URL       broker (required in practice; default amqp://guest@127.0.0.1//)
  RESULTS_DIR             where work() records ids (default /results)
  SLUICE_TEST_EARLY_ACK=1 ack on receipt instead of after completion (a negative control:
                          with it, a task killed mid-run is lost)
  SLUICE_TEST_PREFETCH=N  worker_prefetch_multiplier (default 1)

work(task_id, duration): creates RESULTS_DIR/started/<task_id> when it starts, sleeps
`duration` seconds, then creates RESULTS_DIR/<task_id> (atomically: write + rename) when it
completes. A task id present at the top level therefore finished; one only under started/
was running when its worker went away.
"""

import logging
import os
import time

from celery import Celery

EARLY_ACK = os.environ.get("SLUICE_TEST_EARLY_ACK", "") in ("1", "true", "yes")
RESULTS_DIR = os.environ.get("RESULTS_DIR", "/results")

app = Celery("tasks", broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest@127.0.0.1//"))
app.conf.update(
    task_acks_late=not EARLY_ACK,
    task_reject_on_worker_lost=not EARLY_ACK,
    worker_prefetch_multiplier=int(os.environ.get("SLUICE_TEST_PREFETCH", "1")),
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=True,
    worker_redirect_stdouts_level="WARNING",
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    broker_heartbeat=0,
    enable_utc=True,
)
logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)


def _record(directory, name, content):
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.%d.tmp" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(directory, name))


@app.task(name="tasks.work")
def work(task_id, duration=0.0):
    task_id = os.path.basename(str(task_id))  # it names a file
    _record(os.path.join(RESULTS_DIR, "started"), task_id, "%f\n" % time.time())
    if duration:
        time.sleep(float(duration))
    _record(RESULTS_DIR, task_id, "%s %f\n" % (os.environ.get("HOSTNAME", ""), time.time()))
    return task_id
