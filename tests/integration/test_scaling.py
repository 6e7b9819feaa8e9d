"""Scaling end to end: real sluiced, real dockerd, real RabbitMQ, real Celery workers.

Issue #3 (a, b, b', e): a backlog grows a pool to max and back to zero through the scale-down
policy; churn loses no task (and the same checks do see a loss when early ack meets a short
grace); two pools scale independently, a long drain in one does not hold up the other.

Every test uses its own pool names (so its containers carry io.sluice.pool=<its pool>), and
the `scaler` fixture stops its sluiced first and then removes those containers.
"""

import os
import random
import secrets
import subprocess
import threading
import time

import pytest

import bed as bedmod
from sluicecfg import config, pool_conf

DRAINING = "-draining-"


def _pool_name(tag):
    return "%s-%d-%s" % (tag, os.getpid(), secrets.token_hex(2))


class PoolWatch(threading.Thread):
    """Samples the Docker list of some pools every `every` seconds (plus, optionally, a
    results dir and a queue's statistics). Each sample: (monotonic time, {pool: [(name,
    state)]}). Also notes, the first time it sees each draining name, the ids that were
    started but not completed at that moment."""

    def __init__(self, bed, pools, every=0.25, results_dir=None, queue=None):
        super().__init__(daemon=True)
        self.bed = bed
        self.pools = list(pools)
        self.every = every
        self.results_dir = results_dir
        self.queue = queue
        self.samples = []
        self.queue_samples = []   # (t, messages) from the management API
        self.drains = []          # (t, draining name, ids in flight)
        self.completions = {}     # id -> set of distinct completion records seen
        self.errors = 0
        self._halt = threading.Event()
        self._seen_draining = set()
        self.lock = threading.Lock()

    def run(self):
        while not self._halt.is_set():
            t = time.monotonic()
            snap = {}
            try:
                for p in self.pools:
                    snap[p] = [(c["Names"][0].lstrip("/"), c["State"])
                               for c in self.bed.containers(["io.sluice.pool=" + p])]
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                self.errors += 1
                snap = None
            inflight = None
            if self.results_dir:
                done = bedmod.done_ids(self.results_dir)
                inflight = bedmod.started_ids(self.results_dir) - done
                for i in done:
                    try:
                        with open(os.path.join(self.results_dir, i)) as f:
                            rec = f.read()
                    except OSError:
                        continue
                    self.completions.setdefault(i, set()).add(rec)
            with self.lock:
                if snap is not None:
                    self.samples.append((t, snap))
                    for p, cs in snap.items():
                        for name, state in cs:
                            if DRAINING in name and name not in self._seen_draining:
                                self._seen_draining.add(name)
                                self.drains.append((t, name, inflight))
            if self.queue:
                try:
                    s = self.bed.queue_stats(self.queue)
                    if s and s["messages"] is not None:
                        self.queue_samples.append((time.monotonic(), s["messages"]))
                except Exception:  # noqa: BLE001
                    pass
            self._halt.wait(max(0.0, self.every - (time.monotonic() - t)))

    def stop(self):
        self._halt.set()
        self.join(timeout=10)

    @staticmethod
    def capacity(cs):
        """Workers that count as capacity: created or running, not draining."""
        return sum(1 for name, state in cs
                   if DRAINING not in name and state in ("created", "running"))

    @staticmethod
    def draining_running(cs):
        return [name for name, state in cs if DRAINING in name and state == "running"]

    def series(self, pool):
        with self.lock:
            return [(t, self.capacity(s[pool])) for t, s in self.samples]

    def last(self, pool):
        with self.lock:
            return self.samples[-1][1][pool] if self.samples else None

    def wait(self, pred, timeout, what):
        """Wait until pred(latest sample dict) holds; returns that sample's time."""
        def check():
            with self.lock:
                if not self.samples:
                    return None
                t, s = self.samples[-1]
            return t if pred(s) else None
        t = bedmod.wait_for(check, timeout=timeout, interval=0.1)
        assert t, "timed out (%.0f s) waiting for %s; last sample %s" % (
            timeout, what, self.samples[-1] if self.samples else None)
        return t


@pytest.fixture
def scaler(bed, sluiced):
    """start(pool_confs, pool_names) -> (Sluiced, PoolWatch); at teardown: stop the
    watchers, kill the daemons, then remove every container of those pools."""
    daemons, watches, pools = [], [], []

    def start(confs, names, tmpdir, watch_kw=None):
        pools.extend(names)
        d = sluiced(config(bed, confs, tmpdir, interval=0.5))
        daemons.append(d)
        d.wait_notify("READY=1", timeout=20)
        w = PoolWatch(bed, names, **(watch_kw or {}))
        watches.append(w)
        w.start()
        return d, w

    try:
        yield start
    finally:
        for w in watches:
            w.stop()
        for d in daemons:
            d.close()
        for p in pools:
            for c in bed.containers(["io.sluice.pool=" + p]):
                bed.dk.remove(c["Id"])


def _log_count(d, what):
    return sum(1 for line in d.log_lines() if (": %s " % what) in line)


def test_backlog_grows_to_max_then_back_to_zero(bed, q, scaler, sluicectl_binary):
    """Promise (SPEC Decision): desired = ceil(depth/target) clamped to [min, max]: a backlog
    grows the pool to max and never beyond; when the queue drains the pool goes back to min
    (0) through the scale-down policy, max_step 1 per period (passing through every count,
    never N -> 0 in one tick), and to zero only after `cooldown` seconds without backlog.
    Also: `sluicectl status` shows the pool's row."""
    pool, mx, cooldown = _pool_name("backlog"), 3, 10.0
    bed.declare_queue(q.name)
    conf = pool_conf(bed, pool, q.name, q.results_dir, target=10, min=0, max=mx,
                     cooldown=cooldown, up=(0, 4, 1), down=(1, 1, 2), stop_timeout=10)
    d, w = scaler([conf], [pool], q.tmpdir, {"queue": q.name})

    t_pub = time.monotonic()
    ids = q.publish(100, duration=0.2)
    t_max = w.wait(lambda s: PoolWatch.capacity(s[pool]) == mx, 60, "pool at max")
    print("\nscale-up time: publish -> %d workers: %.2f s" % (mx, t_max - t_pub))

    st = subprocess.run([sluicectl_binary, "-s", d.runtime_dir, "status"],
                        capture_output=True, text=True, timeout=10)
    print(st.stdout)
    assert st.returncode == 0, st.stderr
    rows = [ln.split() for ln in st.stdout.splitlines()]
    assert rows and rows[0][0] == "POOL", st.stdout
    assert any(r and r[0] == pool for r in rows[1:]), st.stdout

    assert bedmod.wait_for(lambda: q.done() >= set(ids), timeout=120), \
        "completed %d of %d" % (len(q.done() & set(ids)), len(ids))
    # back to zero: no container of the pool left at all (drained ones are removed)
    w.wait(lambda s: not s[pool], 60, "pool back to zero")
    w.stop()
    assert q.done() == set(ids)

    series = w.series(pool)
    caps = [c for _, c in series]
    assert max(caps) == mx, caps
    i_peak = caps.index(mx)
    i_zero = next(i for i in range(i_peak, len(caps)) if caps[i] == 0)
    down = caps[i_peak:i_zero + 1]
    print("capacity samples from peak to zero (every ~0.25 s):", down)
    # stepwise: every count between max and 0 was seen, the last one before 0 was 1
    assert set(range(0, mx + 1)) <= set(down), down
    assert caps[i_zero - 1] == 1, down
    # max_step 1 per 2 s: no two samples less than 1.5 s apart differ by more than 1 down
    for (t0, c0), (t1, c1) in zip(series, series[1:]):
        if t1 - t0 < 1.5:
            assert c0 - c1 <= 1, "dropped %d -> %d within %.2f s: %s" % (c0, c1, t1 - t0, caps)
    # zero only after cooldown: count from when the queue was first seen empty
    t_empty = next(t for t, m in w.queue_samples if t > t_pub and m == 0)
    t_zero = series[i_zero][0]
    print("queue empty -> pool at 0: %.2f s (cooldown %g s)" % (t_zero - t_empty, cooldown))
    assert t_zero - t_empty >= cooldown - 1.5, (t_zero - t_empty, cooldown)
    assert _log_count(d, "scale down") >= mx
    assert d.stop() == 0


def test_no_task_lost_through_churn(bed, q, scaler):
    """Promise (SPEC Scale-down and drain): a drained worker gets stop_signal and its grace
    (stop_timeout), so with late ack no task is lost while the pool scales up and down
    repeatedly: every published id is recorded as completed."""
    pool = _pool_name("churn")
    bed.declare_queue(q.name)
    conf = pool_conf(bed, pool, q.name, q.results_dir, target=5, min=0, max=3, cooldown=2,
                     up=(0, 2, 1), down=(1, 1, 1), stop_timeout=15)
    d, w = scaler([conf], [pool], q.tmpdir, {"results_dir": q.results_dir})
    rnd = random.Random(3)
    ids = []
    for wave in range(3):
        # 17 short tasks, then 3 of 6 s: the tail keeps all 3 workers busy while the
        # depth (3 unacked, target 5) asks for 1, so the drains hit running tasks
        for i, dur in enumerate([rnd.choice((0.5, 1.0, 1.5)) for _ in range(17)] + [6] * 3):
            ids += q.publish(1, duration=dur,
                             ids=["w%d-%02d-%s" % (wave, i, secrets.token_hex(3))])
        # the next wave comes once the pool has scaled up for this one (to max) and then
        # started to scale down again (the tail of the wave, or its end)
        w.wait(lambda s: PoolWatch.capacity(s[pool]) == 3, 60, "wave %d: pool at max" % wave)
        n_drains = len(w.drains)
        assert bedmod.wait_for(lambda: len(w.drains) > n_drains, timeout=60), \
            "wave %d: no scale-down; log:\n%s" % (wave, d.log_text()[-2000:])
    assert bedmod.wait_for(lambda: q.done() >= set(ids), timeout=120), \
        "completed %d of %d" % (len(q.done() & set(ids)), len(ids))
    time.sleep(1.0)  # a duplicate completion, if any, lands now
    w.stop()
    ups, downs = _log_count(d, "scale up"), _log_count(d, "scale down")
    busy_drains = [(n, sorted(f)) for _, n, f in w.drains if f]
    dups = sum(len(v) - 1 for v in w.completions.values())
    print("\n%d tasks, %d completed, duplicates seen: %d; scale up x%d, scale down x%d; "
          "%d drains, %d with a task in flight: %s" % (
              len(ids), len(q.done()), dups, ups, downs, len(w.drains), len(busy_drains),
              busy_drains[:3]))
    missing = set(ids) - q.done()
    assert not missing, "lost %d: %s" % (len(missing), sorted(missing)[:10])
    assert q.done() == set(ids)
    assert q.started() <= q.done(), q.started() - q.done()
    # it was churn: repeated scaling both ways, and drains happened with work in flight
    assert ups >= 2 and downs >= 2, (ups, downs)
    assert busy_drains, "no drain happened while a task was running: %s" % w.drains
    assert d.stop() == 0


def test_loss_visible_with_early_ack_and_short_grace(bed, q, scaler):
    """Negative control for test_no_task_lost_through_churn: with early ack and a grace
    shorter than the task, draining the pool while tasks run loses them (started, never
    completed), and the same accounting sees it."""
    pool = _pool_name("loss")
    bed.declare_queue(q.name)
    conf = pool_conf(bed, pool, q.name, q.results_dir, target=1, min=0, max=2, cooldown=1,
                     up=(0, 2, 1), down=(0, 1, 1), stop_timeout=1, count="ready",
                     extra_env=["SLUICE_TEST_EARLY_ACK=1"])
    d, w = scaler([conf], [pool], q.tmpdir)
    ids = q.publish(2, duration=15)
    assert bedmod.wait_for(lambda: q.started(), timeout=60), "no task started"
    bed.purge_queue(q.name)  # demand gone: the pool drains while the tasks run
    # ends when the pool is gone and nothing is queued (reserved messages come back on a
    # kill and may be run, and killed, again)
    w.wait(lambda s: not s[pool] and not bed.queue_stats(q.name)["messages"], 90,
           "pool at zero and queue empty")
    w.stop()
    lost = q.started() - q.done()
    print("\npublished %d, started %d, completed %d, lost while running %d; %d drains" % (
        len(ids), len(q.started()), len(q.done()), len(lost), len(w.drains)))
    assert w.drains
    assert lost, "early ack + 1 s grace + 15 s tasks lost nothing: the check cannot see loss"
    assert d.stop() == 0


def test_two_pools_independent(bed, q, scaler):
    """Promise (SPEC Decision: several pools are independent): load on queue A scales only
    pool A; a long drain in pool A (a 20 s task running when A scales down, stop_timeout 40)
    does not hold up pool B: B reaches its target while A's draining container still runs."""
    pa, pb = _pool_name("twoa"), _pool_name("twob")
    qa, qb = q.name, q.queue("b")
    bed.declare_queue(qa)
    bed.declare_queue(qb)
    ca = pool_conf(bed, pa, qa, q.results_dir, target=1, min=0, max=2, cooldown=1,
                   up=(0, 2, 1), down=(0, 1, 1), stop_timeout=40, count="ready")
    cb = pool_conf(bed, pb, qb, q.results_dir, target=1, min=0, max=2, cooldown=5,
                   up=(0, 2, 1), down=(2, 1, 1), stop_timeout=10)
    d, w = scaler([ca, cb], [pa, pb], q.tmpdir)

    (long_id,) = q.publish(1, duration=20, queue=qa)
    w.wait(lambda s: PoolWatch.capacity(s[pa]) == 1, 60, "pool A at 1")
    assert bedmod.wait_for(lambda: long_id in q.started(), timeout=60), "A's task not started"
    # A scales down while its task runs (count = ready: the running task is not demand)
    t_drain = w.wait(lambda s: PoolWatch.draining_running(s[pa]), 60, "A draining")
    assert long_id not in q.done(), "the task finished before A's drain began; too short"
    with w.lock:
        b_before = max(PoolWatch.capacity(s[pb]) for _, s in w.samples)
        a_max = max(PoolWatch.capacity(s[pa]) for _, s in w.samples)
    assert b_before == 0, "pool B scaled on queue A's load"
    assert a_max == 1

    b_ids = q.publish(2, duration=3, queue=qb)
    t_b = w.wait(lambda s: PoolWatch.capacity(s[pb]) == 2, 60, "pool B at target 2")
    with w.lock:
        snap_b = dict(w.samples)[t_b]
    a_draining = PoolWatch.draining_running(snap_b[pa])
    print("\nA drain began at +0, B at target at +%.1f s; A draining then: %s" % (
        t_b - t_drain, a_draining))
    assert a_draining, "pool B reached its target only after A's drain ended"
    assert long_id not in q.done()
    assert bedmod.wait_for(lambda: set(b_ids) <= q.done(), timeout=60), \
        "B's tasks did not complete"
    w.stop()
    assert d.stop() == 0
