"""Safety promises of sluiced against the real bed (dockerd, RabbitMQ, Celery workers):

- Ownership: containers that do not carry both io.sluice.managed=true and the pool's label are
  never touched, whatever they look like.
- No state of its own: after a kill -9 (mid scale-up, mid drain) a restarted sluiced adopts what
  Docker shows, without duplicates, without exceeding max, and without counting or stopping a
  draining worker again.
- Unknown is never zero: bad readings (injected by faultproxy.py in front of the real
  management API) hold the pool, or move it to the fallback after failure_threshold.
- Secrets never appear in logs, status output or metrics.
"""

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

import bed as bedmod
import sluicecfg

wait_for = bedmod.wait_for
LIVE = ("created", "running", "restarting", "paused")


# -- helpers ---------------------------------------------------------------------------------

def pool_name(q, tag):
    """A short pool name unique to this test run (container names embed it)."""
    return "%s%s" % (tag, hashlib.sha1(q.name.encode()).hexdigest()[:8])


def pool_containers(bed, pool):
    """The pool's containers as sluiced sees them (both labels)."""
    return bed.containers(["io.sluice.pool=" + pool, "io.sluice.managed=true"])


def cname(c):
    return c["Names"][0].lstrip("/")


def is_draining(name):
    return "-draining-" in name


def name_index(name, pool):
    m = re.match(r"^sluice-%s-(\d+)(-draining-\d+)?$" % re.escape(pool), name)
    return int(m.group(1)) if m else None


def capacity(cs):
    """Live, non-draining containers: what may never exceed max."""
    return [c for c in cs if c["State"] in LIVE and not is_draining(cname(c))]


def pool_status(d, pool):
    s = d.status_json()
    for p in (s or {}).get("pools", []):
        if p.get("name") == pool:
            return p
    return None


def with_proxy(text, bed, proxy):
    """Point a sluicecfg config at the fault proxy instead of the management API."""
    old = 'url = "%s";' % bed.mgmt_url
    assert old in text
    return text.replace(old, 'url = "%s";' % proxy.url)


class Sampler:
    """Calls fn() every `every` seconds in a thread and keeps (monotonic time, value)."""

    def __init__(self, fn, every=0.1):
        self.fn = fn
        self.every = every
        self.samples = []
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                v = self.fn()
                self.samples.append((time.monotonic(), v))
            except Exception:  # noqa: BLE001 - a failed sample is skipped, counted
                self.errors += 1
            self._stop.wait(self.every)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(timeout=10)
        return self.samples


class Events:
    """Docker's event stream (type container, optional filters), read in a thread."""

    def __init__(self, bed, filters=None):
        f = {"type": ["container"]}
        f.update(filters or {})
        self.path = "/v1.41/events?" + urllib.parse.urlencode({"filters": json.dumps(f)})
        self.sock_path = bed.docker_socket
        self.events = []
        self.cond = threading.Condition()
        self._conn = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self):
        conn = bedmod.UnixHTTPConnection(self.sock_path, timeout=None)
        self._conn = conn
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            self._ready.set()
            while True:
                line = resp.readline()
                if not line:
                    break
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                ev["_mono"] = time.monotonic()
                with self.cond:
                    self.events.append(ev)
                    self.cond.notify_all()
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            self._ready.set()

    def start(self):
        self._t.start()
        self._ready.wait(10)
        time.sleep(0.2)  # the subscription is in place once the headers came back
        return self

    def stop(self):
        try:
            if self._conn is not None and self._conn.sock is not None:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._t.join(timeout=5)

    def wait(self, pred, timeout):
        """The first event (in arrival order) matching pred, or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))

    def snapshot(self):
        with self.cond:
            return list(self.events)


def attrs(ev):
    return (ev.get("Actor") or {}).get("Attributes") or {}


def ev_id(ev):
    return (ev.get("Actor") or {}).get("ID") or ev.get("id")


@pytest.fixture
def daemons(bed, q, sluiced):
    """sluiced(...) wrapper that remembers pools: at teardown every daemon is killed first, then
    every container of the test's pools is removed (by label), so nothing re-creates them."""

    class Daemons:
        def __init__(self):
            self.started = []
            self.pools = set()

        def __call__(self, text, pools, **kw):
            self.pools.update(pools)
            d = sluiced(text, **kw)
            self.started.append(d)
            return d

    ds = Daemons()
    try:
        yield ds
    finally:
        for d in ds.started:
            d.kill9()
        for p in ds.pools:
            for c in bed.containers(["io.sluice.pool=" + p]):
                bed.dk.remove(c["Id"])


# -- c. ownership ----------------------------------------------------------------------------

def _decoy(bed, q, name, labels, image=None, cmd=None, binds=None):
    lab = dict(q.labels)  # io.sluice.test=<test>: not a sluice label, lets q clean it up
    lab.update(labels)
    body = {"Image": image or bed.busybox_image, "Cmd": cmd or ["sleep", "1000"],
            "Labels": lab, "HostConfig": {"NetworkMode": "none", "Init": True,
                                          "Binds": binds or []}}
    return bed.run_container(body, name=name)


def test_foreign_containers_never_touched(bed, q, daemons):
    """Ownership: sluiced stops, renames or removes only containers carrying both
    io.sluice.managed=true and its pool's label. Look-alike decoys (same image, sluice-like
    names, some of the labels, an exited one) survive a scale 0 -> 3 -> 0 untouched, and every
    container event sluiced causes concerns a container with both labels."""
    pool = pool_name(q, "fc")
    other = pool + "x"
    cel = {"image": bed.celery_image, "cmd": ["/usr/bin/sleep", "1000"],
           "binds": ["/usr:/usr:ro"]}
    decoys = {
        "pool label only": _decoy(bed, q, "sluice-%s-9" % pool, {"io.sluice.pool": pool}),
        "managed only": _decoy(bed, q, "sluice-%s-8" % pool, {"io.sluice.managed": "true"}),
        "managed=false": _decoy(bed, q, "sluice-%s-7" % pool,
                                {"io.sluice.managed": "false", "io.sluice.pool": pool}),
        "another pool": _decoy(bed, q, "sluice-%s-6" % pool,
                               {"io.sluice.managed": "true", "io.sluice.pool": other}),
        "celery, managed=yes": _decoy(bed, q, "sluice-%s-5" % pool,
                                      {"io.sluice.managed": "yes", "io.sluice.pool": pool,
                                       "io.sluice.spec": "0000"}, **cel),
        "celery, draining name": _decoy(bed, q, "sluice-%s-4-draining-1700000000" % pool,
                                        {"io.sluice.pool": pool}, **cel),
    }
    exited = _decoy(bed, q, "sluice-%s-10" % pool, {"io.sluice.pool": pool}, cmd=["true"])
    assert wait_for(lambda: bed.inspect(exited)["State"]["Status"] == "exited", timeout=20)
    decoys["exited, pool label"] = exited
    before = {k: bed.inspect(cid) for k, cid in decoys.items()}
    for k, c in before.items():
        want = "exited" if k.startswith("exited") else "running"
        assert c["State"]["Status"] == want, (k, c["State"])

    text = sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, target=2, max=3, cooldown=2, up=(0, 4, 1),
        down=(1, 1, 1), stop_timeout=10)], q.tmpdir)
    ev = Events(bed).start()
    try:
        bed.declare_queue(q.name)
        ids = q.publish(6, duration=1.0)
        d = daemons(text, [pool])
        d.wait_notify("READY=1", timeout=20)
        # the pool really scales: up to 3, all tasks done, back to zero, containers removed
        assert wait_for(lambda: len(capacity(pool_containers(bed, pool))) >= 3, timeout=30), \
            d.log_text()[-3000:]
        assert wait_for(lambda: q.done() >= set(ids), timeout=60), d.log_text()[-3000:]
        assert wait_for(lambda: not pool_containers(bed, pool), timeout=60), \
            d.log_text()[-3000:]
        assert d.alive()
        d.stop()
    finally:
        ev.stop()

    for k, cid in decoys.items():
        c = bed.inspect(cid)
        assert c is not None, "decoy %r was removed" % k
        b = before[k]
        assert c["Id"] == b["Id"] and c["Name"] == b["Name"], (k, b["Name"], c["Name"])
        assert c["State"]["Status"] == b["State"]["Status"], (k, c["State"])
        assert c["State"]["StartedAt"] == b["State"]["StartedAt"], (k, "restarted")
        assert c["State"]["FinishedAt"] == b["State"]["FinishedAt"], (k, "stopped")
        assert c["RestartCount"] == b["RestartCount"]

    evs = ev.snapshot()
    decoy_ids = set(decoys.values())
    touched = [e for e in evs if ev_id(e) in decoy_ids]
    assert not touched, "decoys touched: %s" % [(e["Action"], attrs(e).get("name"))
                                                 for e in touched]
    foreign = [e for e in evs if attrs(e).get("io.sluice.managed") != "true"
               or attrs(e).get("io.sluice.pool") != pool]
    assert not foreign, "events on foreign containers: %s" % [
        (e["Action"], attrs(e).get("name")) for e in foreign]
    acts = [e["Action"] for e in evs]
    assert acts.count("create") >= 3 and acts.count("destroy") >= 3, acts


def test_foreign_container_holding_a_slot_name_does_not_block_the_pool(bed, q, daemons):
    """Ownership without harm: a foreign container that happens to hold the name of one of the
    pool's slots (sluice-<pool>-1, pool label only) is left alone, and the pool still reaches
    its desired size on other slots."""
    pool = pool_name(q, "fs")
    decoy = _decoy(bed, q, "sluice-%s-1" % pool, {"io.sluice.pool": pool})
    started = bed.inspect(decoy)["State"]["StartedAt"]
    text = sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, target=1, max=2, stop_timeout=5)], q.tmpdir)
    bed.declare_queue(q.name)
    q.publish(4, duration=10.0)
    d = daemons(text, [pool])
    ok = wait_for(lambda: len(capacity(pool_containers(bed, pool))) == 2, timeout=15)
    c = bed.inspect(decoy)
    assert c and c["State"]["Running"] and c["State"]["StartedAt"] == started
    assert ok, d.log_text()[-2000:]


# -- d. kill -9 mid scale-up and mid drain --------------------------------------------------

def test_kill9_during_scale_up_and_drain(bed, q, daemons):
    """No state of its own: a sluiced killed with SIGKILL right after its first create, and
    again right after it began a drain, is restarted with the same config and carries on from
    what Docker shows: no duplicate slot, never more than max capacity, it converges to max; the
    draining worker is not counted as capacity, not stopped again, finishes its task, exits by
    itself and is removed."""
    pool = pool_name(q, "k9")
    mx = 3
    text = sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, target=1, max=mx, cooldown=2, up=(0, 10, 1),
        down=(2, 1, 2), stop_timeout=30, count="ready",
        extra_env=["HOSTNAME={name}"])], q.tmpdir)
    daemon = [None]

    def sample():
        cs = pool_containers(bed, pool)
        s = daemon[0].status_json() if daemon[0] else None
        st = [p for p in (s or {}).get("pools", []) if p.get("name") == pool]
        if st:
            st[0]["_time"] = s["time"]
        return [(cname(c), c["State"], c["Id"]) for c in cs], (st[0] if st else None)

    ev = Events(bed, {"label": ["io.sluice.pool=" + pool]}).start()
    sampler = Sampler(sample).start()
    try:
        bed.declare_queue(q.name)
        ids = q.publish(3, duration=20.0)

        # (1) killed right after the first create of a scale-up 0 -> 3
        d = daemons(text, [pool])
        daemon[0] = d
        first = ev.wait(lambda e: e["Action"] == "create", timeout=30)
        d.kill9()
        assert first is not None, d.log_text()[-3000:]
        d.start()  # same config, same runtime dir
        assert wait_for(lambda: len([c for c in capacity(pool_containers(bed, pool))
                                     if c["State"] == "running"]) == mx, timeout=40), \
            d.log_text()[-3000:]
        # every task taken by a worker: ready 0 (count = "ready"), so the pool scales down
        assert wait_for(lambda: len(q.started()) == 3, timeout=40), d.log_text()[-3000:]

        # (2) killed right after the drain of a worker began (its SIGTERM was sent)
        stop_ev = ev.wait(lambda e: e["Action"] == "kill" and is_draining(
            attrs(e).get("name", "")) and attrs(e).get("signal") == "15", timeout=60)
        d.kill9()
        t_kill = time.monotonic()
        assert stop_ev is not None, d.log_text()[-3000:]
        victim = ev_id(stop_ev)
        vname = attrs(stop_ev)["name"]
        vindex = name_index(vname, pool)
        drain_began = time.time()
        d.start()
        restarted = time.time()
        # it exits by itself (its task done) and is removed by the restarted sluiced
        assert wait_for(lambda: bed.inspect(victim) is None, timeout=60), d.log_text()[-3000:]
        t_gone = time.monotonic()
        assert wait_for(lambda: q.done() >= set(ids), timeout=60), d.log_text()[-3000:]
        assert wait_for(lambda: not pool_containers(bed, pool), timeout=60), \
            d.log_text()[-3000:]
    finally:
        samples = sampler.stop()
        ev.stop()

    log = d.log_text()
    # never more than max capacity, never two live containers on one slot
    for t, (cs, _) in samples:
        live = [(n, s) for n, s, _ in cs if s in LIVE]
        cap = [n for n, _ in live if not is_draining(n)]
        assert len(cap) <= mx, (cap, live)
        idx = [name_index(n, pool) for n, _ in live]
        assert len(idx) == len(set(idx)), "duplicate slot: %s" % live
    evs = ev.snapshot()
    created = [e for e in evs if e["Action"] == "create"]
    assert len({attrs(e)["name"] for e in created}) == len(created), \
        [attrs(e)["name"] for e in created]
    assert len(created) == mx, "expected exactly %d creates, got %s" % (
        mx, [attrs(e)["name"] for e in created])
    assert not [e for e in created if e["_mono"] > t_kill], "created after the drain restart"

    # the draining worker was never capacity in the restarted daemon's status
    # (status.json is written each tick, so it may lag the sample by a tick: compare with the
    # largest count seen in the 1.5 s before; nothing is created after t_kill, counts only fall)
    def n_cap(cs):
        return len([n for n, s, _ in cs if s in LIVE and not is_draining(n)])

    checked = 0
    for t, (cs, st) in samples:
        if not (t_kill < t < t_gone) or st is None or st["_time"] < restarted:
            continue
        if not [n for n, s, i in cs if i == victim and s == "running"]:
            continue
        recent = max(n_cap(c2) for t2, (c2, _) in samples if t - 1.5 <= t2 <= t)
        assert st["running"] + st["starting"] <= recent, (st, cs)
        assert st["draining"] >= 1, st
        checked += 1
    assert checked >= 5, "too few status samples while the victim drained: %d" % checked
    # stopped once (SIGTERM), never again, never killed; exited by itself with 0; removed
    vev = [e for e in evs if ev_id(e) == victim]
    kills = [attrs(e).get("signal") for e in vev if e["Action"] == "kill"]
    assert kills == ["15"], "victim got signals %s" % kills
    dies = [attrs(e).get("exitCode") for e in vev if e["Action"] == "die"]
    assert dies == ["0"], "victim died with %s" % dies
    assert [e for e in vev if e["Action"] == "destroy"], "victim not removed"
    # its task completed after the drain began: recorded by the worker on slot vindex
    mine = []
    for tid in ids:
        with open(os.path.join(q.results_dir, tid)) as f:
            host, when = f.read().split()
        if host == "sluice-%s-%d" % (pool, vindex):
            mine.append((tid, float(when)))
    assert len(mine) == 1 and mine[0][1] > drain_began - 1, (vname, mine)


# -- unknown is never zero -------------------------------------------------------------------

FAULTS = [  # mode, error kind counted in status.json, what the log line says
    ("500", "http", r"HTTP 500"),
    ("garbage", "parse", r"garbled JSON"),
    ("truncated", "parse", r"garbled JSON"),
    ("stall", "timeout", r"timed out"),
    ("closed", "connect", r"management API: "),
    ("empty", "absent", r"absent"),
]


def test_bad_readings_hold_the_pool(bed, q, daemons, proxy):
    """Unknown is never zero: while the management API answers 500, garbage, truncated JSON,
    an empty list, stalls or refuses connections, a pool of 2 whose queue really is empty holds
    at 2 (guard "error hold", failures counted, the error logged); once readings return it
    recovers by itself and scales down."""
    pool = pool_name(q, "br")
    text = with_proxy(sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, target=1, max=3, cooldown=1, up=(0, 4, 1),
        down=(1, 1, 1), stop_timeout=10)], q.tmpdir, timeout=1.0), bed, proxy)
    bed.declare_queue(q.name)
    ids = q.publish(2, duration=4.0)
    d = daemons(text, [pool])
    assert wait_for(lambda: len(q.started()) == 2, timeout=40), d.log_text()[-3000:]
    assert len(capacity(pool_containers(bed, pool))) == 2
    proxy.set_mode("500")
    sampler = Sampler(lambda: [(cname(c), c["State"]) for c in pool_containers(bed, pool)])
    sampler.start()
    try:
        # the real queue empties: a good reading now would scale the pool down
        assert wait_for(lambda: q.done() >= set(ids), timeout=30)
        bed.wait_queue(q.name, ready=0, unacked=0, timeout=30)
        for mode, kind, rx in FAULTS:
            st0 = pool_status(d, pool)
            proxy.set_mode(mode)
            ok = wait_for(lambda: (pool_status(d, pool)["failures"] >= st0["failures"] + 3
                                   and pool_status(d, pool)["errors"][kind]
                                   >= st0["errors"][kind] + 2), timeout=30)
            st = pool_status(d, pool)
            assert ok, (mode, st, d.log_text()[-2000:])
            assert st["guard"] == "error hold" and not st["depth_valid"], (mode, st)
            assert st["running"] + st["starting"] == 2 and st["desired"] == 2, (mode, st)
            assert re.search(r"depth unknown \(.*%s.*\); holding 2 workers" % rx,
                             d.log_text()), (mode, d.log_text()[-2000:])
        assert len(capacity(pool_containers(bed, pool))) == 2
    finally:
        samples = sampler.stop()
    assert samples and all(
        len([n for n, s in cs if s in LIVE]) == 2 and not any(is_draining(n) for n, _ in cs)
        for _, cs in samples), [cs for _, cs in samples if len(cs) != 2][:3]
    # readings return: sluiced recovers by itself and scales down to zero
    proxy.set_mode("pass")
    assert wait_for(lambda: not pool_containers(bed, pool), timeout=60), d.log_text()[-3000:]
    st = pool_status(d, pool)
    assert st["failures"] == 0 and st["depth_valid"], st
    assert d.alive()


def test_fallback_after_threshold(bed, q, daemons, proxy):
    """fallback = 1; failure_threshold = 2: after 2 consecutive failed readings the pool moves
    to 1 worker, from 0 (scale-up) and from 3 (scale-down), and stays there."""
    pool = pool_name(q, "fb")
    text = with_proxy(sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, target=1, max=3, cooldown=30, up=(0, 4, 1),
        down=(0, 1, 0.5), stop_timeout=5,
        on_error="fallback = 1; failure_threshold = 2;")], q.tmpdir, timeout=1.0), bed, proxy)
    bed.declare_queue(q.name)
    proxy.set_mode("500")
    d = daemons(text, [pool])
    # from 0
    assert wait_for(lambda: capacity(pool_containers(bed, pool)), timeout=30), \
        d.log_text()[-3000:]
    assert proxy.count("500") >= 2
    assert proxy.count("pass") == 0
    st = wait_for(lambda: pool_status(d, pool)["guard"] == "fallback" and pool_status(d, pool),
                  timeout=10)
    assert st and st["failures"] >= 2 and st["desired"] == 1, st
    log = d.log_text()
    assert re.search(r"holding 0 workers", log) and re.search(r"fallback to 1", log), log
    time.sleep(2)  # a few more ticks: still exactly one
    assert len(capacity(pool_containers(bed, pool))) == 1

    # from 3: a real backlog scales the pool up, then readings fail again
    q.publish(3, duration=30.0)
    proxy.set_mode("pass")
    assert wait_for(lambda: len(capacity(pool_containers(bed, pool))) == 3, timeout=30), \
        d.log_text()[-3000:]
    proxy.set_mode("500")
    sampler = Sampler(lambda: len(capacity(pool_containers(bed, pool))))
    sampler.start()
    try:
        ok = wait_for(lambda: len(capacity(pool_containers(bed, pool))) == 1
                      and pool_status(d, pool)["guard"] == "fallback", timeout=30)
        assert ok, (pool_status(d, pool), d.log_text()[-3000:])
        time.sleep(2)
    finally:
        samples = sampler.stop()
    assert min(v for _, v in samples) == 1 and samples[-1][1] == 1, [v for _, v in samples]


def _secrets_nowhere(bed, q, daemons, proxy, sluicectl_binary, modes):
    """Run sluiced --verbose through the proxy in each of MODES (a few requests each) and
    assert the RabbitMQ password and base64("user:password") appear in none of its outputs."""
    pool = pool_name(q, "sec")
    mport = bedmod.free_port({bed.mgmt_port, bed.amqp_port, proxy.port})
    text = with_proxy(sluicecfg.config(bed, [sluicecfg.pool_conf(
        bed, pool, q.name, q.results_dir, max=1)], q.tmpdir, timeout=1.0,
        extra_top='metrics: { listen = "127.0.0.1:%d"; };' % mport), bed, proxy)
    pw = bed.password  # random per bed: a canary nothing else prints
    b64 = base64.b64encode(("%s:%s" % (bed.user, pw)).encode()).decode()
    bed.declare_queue(q.name)
    proxy.set_mode(modes[0])
    d = daemons(text, [pool], extra_args=["--verbose"])
    metrics = []
    for mode in modes:
        proxy.set_mode(mode)
        n0 = proxy.count(mode)
        assert wait_for(lambda: proxy.count(mode) >= n0 + 3, timeout=20), d.log_text()[-2000:]
        time.sleep(0.6)  # the tick's answer is logged and written out
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            metrics.append(r.read().decode(errors="replace"))
    # the secret was really in play: the proxy saw it on every request
    assert proxy.auth_headers == {"Basic " + b64}, proxy.auth_headers
    log = d.log_text()
    env = dict(os.environ, RUNTIME_DIRECTORY=d.runtime_dir)
    outs = {"log": log, "metrics": "\n".join(metrics), "notify": "\n".join(d.messages())}
    with open(os.path.join(d.runtime_dir, "status.json")) as f:
        outs["status.json"] = f.read()
    for args in (["status"], ["status", "--json"], ["explain", pool]):
        r = subprocess.run([sluicectl_binary, "-s", d.runtime_dir] + args, env=env,
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        outs["sluicectl " + " ".join(args)] = r.stdout + r.stderr
    for where, out in outs.items():
        for sec in (pw, b64):
            assert sec not in out, "secret %r found in %s" % (sec[:4] + "...", where)
    return log


def test_secret_never_logged(bed, q, daemons, proxy, sluicectl_binary):
    """Secrets never appear in logs, status output or metrics: with --verbose, through a
    management API that answers 401 and 500 (then passes), neither the RabbitMQ password nor
    base64("user:password") shows up in the log, status.json, sluicectl status / status --json
    / explain, metrics, or STATUS= messages."""
    log = _secrets_nowhere(bed, q, daemons, proxy, sluicectl_binary, ("401", "500", "pass"))
    assert re.search(r"HTTP 401", log) and re.search(r"HTTP 500", log), log[-2000:]


def test_secret_echoed_by_the_server_is_masked(bed, q, daemons, proxy, sluicectl_binary):
    """Secrets never appear in error messages, even when what answers (a misconfigured
    middlebox in front of the management API) reflects the Authorization header into its
    HTTP 500 error body, which sluiced quotes in its log and status."""
    log = _secrets_nowhere(bed, q, daemons, proxy, sluicectl_binary, ("echo",))
    assert re.search(r"HTTP 500", log), log[-2000:]
