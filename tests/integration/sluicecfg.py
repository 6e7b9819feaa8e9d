"""Build sluice.conf text for integration tests against the bed (bed.py).

    pool_conf(bed, name="p1", queue="q1", results_dir=..., target=2, max=3, ...)
    config(bed, [pool_conf(...), ...], interval=0.5, password_file=...)

Pools default to short windows (seconds) so a test sees scaling within its time budget, and to
a real Celery worker container (the bed's celery image with the host's /usr, tests/app at /app).
"""

import os

WORKER_CMD = ["/usr/bin/python3", "-m", "celery", "--workdir", "/app", "-A", "tasks", "worker",
              "--loglevel=info", "--prefetch-multiplier=1", "-n", "{name}@%h", "-c", "1",
              "--without-gossip", "--without-mingle", "--without-heartbeat"]


def _s(v):
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def _list(items):
    return "[ " + ", ".join(_s(i) for i in items) + " ]"


def pool_conf(bed, name, queue, results_dir, target=2, min=0, max=3, activation=0,
              cooldown=2, up=(0, 4, 1), down=(2, 1, 1), stop_timeout=20,
              extra_env=(), image=None, command=None, queues=None, extra="", labels=None,
              count=None, source=None, on_error=None):
    """One pool group. up/down = (stabilization, max_step, period) in seconds."""
    os.makedirs(os.path.join(results_dir, "started"), exist_ok=True)
    cmd = list(command) if command is not None else WORKER_CMD + ["-Q", ",".join(queues or [queue])]
    env = ["CELERY_BROKER_URL=" + bed.amqp_url, "RESULTS_DIR=/results", "HOME=/tmp",
           "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"] + list(extra_env)
    vols = ["/usr:/usr:ro", "/etc:/etc:ro", bed.app_dir + ":/app:ro",
            os.path.abspath(results_dir) + ":/results"]
    lab = ""
    if labels:
        lab = "labels = %s;" % _list("%s=%s" % kv for kv in labels.items())
    opt = ""
    if count:
        opt += "count = %s; " % _s(count)
    if source:
        opt += "source = %s; " % _s(source)
    if on_error:
        opt += on_error + " "
    return """{
    name = %s; queues = %s; target = %g; activation = %g; min = %d; max = %d;
    cooldown = %g; %s
    scale_up: { stabilization = %g; max_step = %d; period = %g; };
    scale_down: { stabilization = %g; max_step = %d; period = %g; };
    stop_timeout = %g;
    %s
    container: {
      image = %s;
      command = %s;
      env = %s;
      network = "host";
      volumes = %s;
      init = true;
      %s
    };
  }""" % (_s(name), _list(queues or [queue]), target, activation, min, max, cooldown, opt,
          up[0], up[1], up[2], down[0], down[1], down[2], stop_timeout, extra,
          _s(image or bed.celery_image), _list(cmd), _list(env), _list(vols), lab)


def config(bed, pools, tmpdir, interval=0.5, timeout=2.0, extra_top=""):
    """The whole file; the RabbitMQ password goes to a 0600 password_file in tmpdir."""
    pw = os.path.join(tmpdir, "rabbitmq.password")
    with open(pw, "w") as f:
        f.write(bed.password + "\n")
    os.chmod(pw, 0o600)
    return """interval = %g;
docker: { socket = %s; };
rabbitmq: { url = %s; user = %s; password_file = %s; amqp_url = %s; timeout = %g; };
%s
pools = (
  %s
);
""" % (interval, _s(bed.docker_socket), _s(bed.mgmt_url), _s(bed.user), _s(pw),
       _s("amqp://127.0.0.1:%d/" % bed.amqp_port), timeout, extra_top, ",\n  ".join(pools))
