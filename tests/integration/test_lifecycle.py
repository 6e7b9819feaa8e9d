"""sluiced's life cycle against the real bed: command line and exit codes, sd_notify, SIGHUP
reloads (bounds, rolling spec changes, bad configs), SIGTERM and adoption, --dry-run, --once,
sluicectl and /metrics.

Every test names the promise it proves (SPEC.md sections "Command line", "systemd",
"Ownership", "Spec changes", "Observability"). Pools get names unique to the test; the
containers sluiced creates for them (label io.sluice.pool=<pool>) are removed at teardown,
after the daemons are stopped.
"""

import os
import re
import secrets
import subprocess
import threading
import time
import types
import urllib.request

import pytest

import bed as bedmod
import sluicecfg

WAIT = 60.0  # generous: conditions, not speed


# -- helpers --------------------------------------------------------------------------------
def _pool_name(tag):
    return "lc-%s-%d-%s" % (tag, os.getpid(), secrets.token_hex(2))


def _cname(c):
    return (c.get("Names") or ["/?"])[0].lstrip("/")


def _is_draining(c):
    return "-draining-" in _cname(c)


def _pool_containers(bed, pool):
    return bed.containers(["io.sluice.pool=" + pool])


def _live(bed, pool):
    """The pool's capacity as Docker shows it: non-draining containers that are (or are about
    to be) running."""
    return [c for c in _pool_containers(bed, pool)
            if not _is_draining(c) and c.get("State") in ("created", "running", "restarting")]


def _running(bed, pool):
    return [c for c in _live(bed, pool) if c.get("State") == "running"]


def _pool_status(d, pool):
    s = d.status_json()
    if not s:
        return None
    for p in s.get("pools", []):
        if p.get("name") == pool:
            return p
    return None


def _conf(bed, q, pools, **kw):
    return sluicecfg.config(bed, pools, q.tmpdir, **kw)


def _pool(bed, q, name, **kw):
    return sluicecfg.pool_conf(bed, name, q.name, q.results_dir, **kw)


def _line_of(text, needle):
    """1-based number of the first line of text containing needle."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


class Lifecycle:
    """Per-test bookkeeping: pools whose containers to remove, daemons to stop first."""

    def __init__(self, bed, q, factory):
        self.bed, self.q, self.factory = bed, q, factory
        self.pools = []
        self.daemons = []

    def pool(self, tag):
        name = _pool_name(tag)
        self.pools.append(name)
        return name

    def start(self, config_text, extra_args=(), env=None, start=True):
        d = self.factory(config_text, extra_args=extra_args, env=env, start=start)
        self.daemons.append(d)
        return d

    def teardown(self):
        for d in self.daemons:
            try:
                d.close()
            except Exception as e:  # noqa: BLE001 - teardown goes on
                bedmod.log("closing sluiced: %r" % e)
        for p in self.pools:
            for c in _pool_containers(self.bed, p):
                self.bed.dk.remove(c["Id"])


@pytest.fixture
def lc(bed, q, sluiced):
    ctx = Lifecycle(bed, q, sluiced)
    try:
        yield ctx
    finally:
        ctx.teardown()


def _fake_bed(tmpdir):
    """Enough of a Bed for sluicecfg to write a valid file: sluiced -t opens no socket."""
    return types.SimpleNamespace(
        amqp_url="amqp://sluice:x@127.0.0.1:5672//", app_dir=bedmod.APP_DIR,
        celery_image=bedmod.CELERY_IMAGE, docker_socket=os.path.join(tmpdir, "docker.sock"),
        mgmt_url="http://127.0.0.1:15672", user="sluice", password="pw-" + secrets.token_hex(8),
        amqp_port=5672)


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=30, **kw)


# -- the command line without the bed -------------------------------------------------------
def test_check_config_exit_codes(sluiced_binary, tmp_path):
    """SPEC "Command line": `sluiced -t` exits 0 on a good config and 78 (EX_CONFIG) with
    `FILE:LINE: message` (the right line) on a syntax error, an unknown key and max < min; a
    config holding the password inline must not be world-readable (78, and the password is
    not echoed); --version exits 0; an unknown option exits 64 (EX_USAGE)."""
    tmp = str(tmp_path)
    fb = _fake_bed(tmp)
    good = sluicecfg.config(fb, [sluicecfg.pool_conf(fb, "p1", "q1", os.path.join(tmp, "res"),
                                                     min=0, max=3)], tmp)

    def check(name, text, mode=0o600):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path, _run([sluiced_binary, "-t", "-c", path])

    path, r = check("good.conf", good)
    assert r.returncode == 0, r
    assert "OK" in r.stdout

    lines = good.splitlines()
    bad_syntax = "\n".join(lines[:4] + ["this is = not ; valid {"] + lines[4:]) + "\n"
    unknown = good.replace("stop_timeout = 20;", "stop_timeout = 20; bogus_key = 1;")
    maxmin = good.replace("min = 0; max = 3;", "min = 3; max = 2;")
    cases = [("syntax.conf", bad_syntax, 5, "syntax"),
             ("unknown.conf", unknown, _line_of(unknown, "bogus_key"), "bogus_key"),
             ("maxmin.conf", maxmin, _line_of(maxmin, "max = 2;"), "max")]
    for name, text, line, word in cases:
        path, r = check(name, text)
        assert r.returncode == 78, (name, r)
        m = re.search(r"^(?:<\d>)?(\S+?):(\d+): (.*)$", r.stderr, re.M)
        assert m, (name, r.stderr)
        assert m.group(1) == path and int(m.group(2)) == line, (name, line, r.stderr)
        assert word in m.group(3), (name, r.stderr)

    # Inline password: refused while world-readable, accepted once it is not.
    inline = re.sub(r'password_file = "[^"]*";', 'password = "%s";' % fb.password, good)
    assert 'password = "' in inline
    path, r = check("inline.conf", inline, 0o644)
    assert r.returncode == 78, r
    assert re.search(r"%s:\d+: .*world-readable" % re.escape(path), r.stderr), r.stderr
    assert fb.password not in r.stdout + r.stderr
    path, r = check("inline-private.conf", inline, 0o600)
    assert r.returncode == 0, r

    r = _run([sluiced_binary, "--version"])
    assert r.returncode == 0 and r.stdout.startswith("sluiced "), r
    r = _run([sluiced_binary, "--no-such-option"])
    assert r.returncode == 64, r
    r = _run([sluiced_binary, "-c", os.path.join(tmp, "good.conf"), "stray-argument"])
    assert r.returncode == 64, r


# -- sd_notify --------------------------------------------------------------------------------
def _notes_after(d, t):
    with d._cond:
        return [m for tt, m in d.notifications if tt >= t]


def _wait_reload_cycle(d, t, timeout=30.0):
    """RELOADING=1 then READY=1, both after monotonic time t."""
    def ok():
        msgs = _notes_after(d, t)
        if "RELOADING=1" not in msgs:
            return False
        return "READY=1" in msgs[msgs.index("RELOADING=1") + 1:]
    assert bedmod.wait_for(ok, timeout=timeout, interval=0.1), (
        "no RELOADING=1 ... READY=1 after SIGHUP; got %r; log:\n%s"
        % (_notes_after(d, t)[-20:], d.log_text()[-3000:]))


def _count(d, prefix):
    return sum(1 for m in d.messages() if m.startswith(prefix))


def test_sd_notify_protocol(bed, q, lc, monkeypatch):
    """SPEC "systemd" (Type=notify): with a broken config sluiced exits 78 with FILE:LINE on
    stderr and never sends READY=1; with a good one READY=1 comes once, after the first poll
    (after the first STATUS=); STATUS= comes every tick as `<pool> N/MAX depth D`; WATCHDOG=1
    comes when WATCHDOG_USEC asks for it; SIGHUP gives RELOADING=1 then READY=1; SIGTERM gives
    STOPPING=1 and exit 0."""
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # libsystemd: unset or our pid
    pool = lc.pool("notify")
    # activation 100: the pool stays at 0, so the depth is exactly what we publish
    good = _conf(bed, q, [_pool(bed, q, pool, max=2, activation=100)])
    broken = good.replace("stop_timeout = 20;", "stop_timeout = 20; bogus_key = 1;")

    d0 = lc.start(broken, env={"WATCHDOG_USEC": "1000000"})
    assert d0.wait_exit(30) == 78, d0.log_text()
    assert re.search(r"^(?:<\d>)?%s:%d: " % (re.escape(d0.config_path),
                                             _line_of(broken, "bogus_key")),
                     d0.log_text(), re.M), d0.log_text()
    time.sleep(0.5)  # let the listener drain anything that was sent
    assert not [m for m in d0.messages() if m.startswith("READY=1")], d0.messages()

    bed.declare_queue(q.name)
    q.publish(3)
    bed.wait_queue(q.name, ready=3, timeout=30)
    d = lc.start(good, extra_args=["--verbose"], env={"WATCHDOG_USEC": "1000000"})
    d.wait_notify("READY=1", 30)
    d.wait_notify("STATUS=%s 0/2 depth 3" % pool, 30)
    d.wait_notify("WATCHDOG=1", 15)
    msgs = d.messages()
    first_status = next(i for i, m in enumerate(msgs) if m.startswith("STATUS="))
    assert first_status < msgs.index("READY=1"), msgs[:10]
    # several ticks later, still a single READY=1
    assert bedmod.wait_for(lambda: _count(d, "STATUS=") >= 8, timeout=WAIT)
    assert _count(d, "READY=1") == 1, d.messages()
    for m in d.messages():
        if m.startswith("STATUS="):
            assert re.fullmatch(r"STATUS=%s \d+/2 depth (\d+|\?)" % re.escape(pool), m), m
    assert not _pool_containers(bed, pool)

    t = d.reload()
    _wait_reload_cycle(d, t)
    assert d.alive()
    n_watchdog = _count(d, "WATCHDOG=1")
    assert bedmod.wait_for(lambda: _count(d, "WATCHDOG=1") > n_watchdog, timeout=15)

    assert d.stop() == 0, d.log_text()[-3000:]
    assert bedmod.wait_for(lambda: "STOPPING=1" in d.messages(), timeout=5), d.messages()[-5:]
    # one STATUS= per tick: as many as the loop logged ticks ("tick:" at debug level)
    time.sleep(0.3)
    ticks = len(re.findall(r"tick: \d+ HTTP requests", d.log_text()))
    assert ticks >= 8 and _count(d, "STATUS=") == ticks, (ticks, _count(d, "STATUS="))


# -- reload ----------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Samples the pool's containers from Docker every 0.2 s: lists of (name, state, spec)."""

    def __init__(self, bed, pool):
        super().__init__(daemon=True)
        self.bed, self.pool = bed, pool
        self.samples = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                snap = [(_cname(c), c.get("State"), c.get("Labels", {}).get("io.sluice.spec"))
                        for c in _pool_containers(self.bed, self.pool)]
                self.samples.append(snap)
            except Exception as e:  # noqa: BLE001
                bedmod.log("sampler: %r" % e)
            self._halt.wait(0.2)

    def finish(self):
        self._halt.set()
        self.join(10)
        return self.samples


def _spec(c):
    return c.get("Labels", {}).get("io.sluice.spec")


def test_reload_applies_bounds_and_rolls_changed_workers(bed, q, lc):
    """SPEC "systemd" + "Spec changes": SIGHUP applies a new max (the pool grows from 2 to 3)
    and replaces the workers whose io.sluice.spec changed one step at a time, new one up
    first: never more than max+1 capacity, never less than max once reached (no old worker
    drained before its replacement is up), a new-spec worker runs before the first old-spec
    one is drained, and in the end every worker has the new spec. No task is lost."""
    pool = lc.pool("roll")
    kw = dict(target=1, min=0, max=2, cooldown=120, up=(0, 4, 0.5), down=(120, 1, 1),
              stop_timeout=20)
    bed.declare_queue(q.name)
    ids = q.publish(20, duration=1.0)
    d = lc.start(_conf(bed, q, [_pool(bed, q, pool, **kw)]))
    d.wait_notify("READY=1", 30)
    assert bedmod.wait_for(lambda: len(_running(bed, pool)) == 2, timeout=WAIT), d.log_text()
    old = {_spec(c) for c in _live(bed, pool)}
    assert len(old) == 1

    sampler = Sampler(bed, pool)
    sampler.start()
    try:
        kw2 = dict(kw, max=3, extra_env=["SLUICE_GENERATION=2"])
        d.write_config(_conf(bed, q, [_pool(bed, q, pool, **kw2)]))
        t = d.reload()
        _wait_reload_cycle(d, t)
        m = d.wait_log(r"%s: worker spec changed \((\w+) -> (\w+)\)" % re.escape(pool), 15)
        assert {m.group(1)} == old and m.group(2) not in old
        new = m.group(2)

        def rolled():
            cs = _pool_containers(bed, pool)
            live = _live(bed, pool)
            return (len(live) == 3 and all(_spec(c) == new and c["State"] == "running"
                                           for c in live)
                    and not [c for c in cs if _spec(c) != new])
        assert bedmod.wait_for(rolled, timeout=90, interval=0.5), (
            [(_cname(c), c["State"], _spec(c)) for c in _pool_containers(bed, pool)],
            d.log_text()[-4000:])
        assert bedmod.wait_for(lambda: q.done() >= set(ids), timeout=WAIT), (
            sorted(set(ids) - q.done()))
    finally:
        samples = sampler.finish()
    ps = _pool_status(d, pool)
    assert ps and ps["max"] == 3, ps

    def capacity(snap):
        return [s for s in snap if "-draining-" not in s[0]
                and s[1] in ("created", "running", "restarting")]
    assert samples
    most = max(len(capacity(s)) for s in samples)
    assert most <= 3 + 1, [s for s in samples if len(capacity(s)) == most][0]
    # new up first: the first sample with an old-spec worker draining already has a new-spec
    # worker running
    first_drain = next((s for s in samples
                        if any("-draining-" in n and sp in old for n, _, sp in s)), None)
    assert first_drain is not None, "no old-spec worker was ever seen draining"
    assert any("-draining-" not in n and st == "running" and sp == new
               for n, st, sp in first_drain), first_drain
    assert any(any(sp == new and st == "running" for _, st, sp in capacity(s))
               and any(sp in old and st == "running" for _, st, sp in capacity(s))
               for s in samples), "never saw old and new workers side by side"
    # ... and every later step too: once at the new max (3), the roll never dips below it
    # (each old worker is drained only after its replacement is up). Without this the first
    # step alone would be checked, and it is a scale-up anyway.
    at_max = next(i for i, s in enumerate(samples) if len(capacity(s)) >= 3)
    dips = [s for s in samples[at_max:] if len(capacity(s)) < 3]
    assert not dips, dips[0]
    assert q.done() == set(ids)
    assert d.stop() == 0


def test_bad_config_on_reload_keeps_old(bed, q, lc):
    """SPEC "systemd": a bad config on SIGHUP (syntax error, unknown key, max < min) is logged
    as FILE:LINE with the right line, sluiced stays alive, READY=1 follows RELOADING=1, and the
    old config keeps running (the pool still stops at the old max 1). Once the file is fixed,
    SIGHUP applies it (max 2)."""
    pool = lc.pool("badrl")
    kw = dict(target=1, min=0, max=1, cooldown=120, up=(0, 4, 0.5), down=(120, 1, 1))
    bed.declare_queue(q.name)
    q.publish(10, duration=2.0)
    d = lc.start(_conf(bed, q, [_pool(bed, q, pool, **kw)]))
    d.wait_notify("READY=1", 30)

    good2 = _conf(bed, q, [_pool(bed, q, pool, **dict(kw, max=2))])
    lines = good2.splitlines()
    syntax = "\n".join(lines[:4] + ["this is = not ; valid {"] + lines[4:]) + "\n"
    unknown = good2.replace("stop_timeout = 20;", "stop_timeout = 20; bogus_key = 1;")
    maxmin = good2.replace("min = 0; max = 2;", "min = 3; max = 2;")
    assert maxmin != good2 and unknown != good2
    for text, line in ((syntax, 5), (unknown, _line_of(unknown, "bogus_key")),
                       (maxmin, _line_of(maxmin, "max = 2;"))):
        mark = len(d.log_text())
        d.write_config(text)
        t = d.reload()
        _wait_reload_cycle(d, t)
        rx = re.compile(r"%s:%d: .*keeping the running configuration"
                        % (re.escape(d.config_path), line))
        assert bedmod.wait_for(lambda: rx.search(d.log_text()[mark:]), timeout=10), (
            line, d.log_text()[mark:])
        assert d.alive()

    # the old max is in force: the backlog asks for more, the pool stops at 1
    def held():
        ps = _pool_status(d, pool)
        return (ps and ps["max"] == 1 and ps["desired"] == 1 and ps["guard"] == "max"
                and len(_running(bed, pool)) == 1)
    assert bedmod.wait_for(held, timeout=WAIT), (_pool_status(d, pool), d.log_text()[-3000:])
    assert len(_live(bed, pool)) == 1

    d.write_config(good2)
    t = d.reload()
    _wait_reload_cycle(d, t)
    d.wait_log(r"configuration reloaded", 10)
    assert bedmod.wait_for(lambda: len(_running(bed, pool)) == 2, timeout=WAIT), (
        _pool_status(d, pool), d.log_text()[-3000:])
    assert _pool_status(d, pool)["max"] == 2
    assert d.stop() == 0


# -- SIGTERM and adoption -------------------------------------------------------------------
def test_sigterm_leaves_workers_and_restart_adopts(bed, q, lc):
    """SPEC "systemd" + "Ownership": SIGTERM stops sluiced (exit 0, STOPPING=1) without
    touching the workers: the same containers keep running their tasks. Started again, it
    adopts them: with demand unchanged it creates, drains and removes nothing, and reports
    them as its workers."""
    pool = lc.pool("adopt")
    conf = _conf(bed, q, [_pool(bed, q, pool, target=1, max=2, cooldown=120,
                                down=(120, 1, 1), stop_timeout=5)])
    bed.declare_queue(q.name)
    ids = q.publish(2, duration=120)
    d = lc.start(conf)
    d.wait_notify("READY=1", 30)
    assert bedmod.wait_for(lambda: len(q.started()) == 2, timeout=WAIT), d.log_text()[-3000:]
    before = {c["Id"] for c in _running(bed, pool)}
    assert len(before) == 2

    assert d.stop() == 0
    assert bedmod.wait_for(lambda: "STOPPING=1" in d.messages(), timeout=5)
    time.sleep(1.0)  # give a wrongly sent stop a chance to show
    assert {c["Id"] for c in _running(bed, pool)} == before
    assert len(_pool_containers(bed, pool)) == 2  # none renamed to -draining-
    assert q.started() == set(ids) and not q.done()

    t = time.monotonic()
    d.start()
    d.wait_notify("READY=1", 30, after=t)
    assert bedmod.wait_for(
        lambda: sum(1 for m in _notes_after(d, t) if m.startswith("STATUS=")) >= 8,
        timeout=WAIT)
    assert {c["Id"] for c in _pool_containers(bed, pool)} == before
    assert {c["Id"] for c in _running(bed, pool)} == before
    ps = _pool_status(d, pool)
    assert ps["running"] + ps["starting"] == 2 and ps["desired"] == 2, ps
    assert ps["draining"] == 0, ps
    assert any(m == "STATUS=%s 2/2 depth 2" % pool for m in _notes_after(d, t)), (
        _notes_after(d, t)[-5:])
    assert d.stop() == 0


# -- --dry-run and --once ---------------------------------------------------------------------
def test_dry_run_changes_nothing(bed, q, lc):
    """SPEC "Command line": --dry-run polls and decides, logs what it would do ("would ..."),
    and creates no container."""
    pool = lc.pool("dry")
    bed.declare_queue(q.name)
    q.publish(4)
    bed.wait_queue(q.name, ready=4, timeout=30)
    d = lc.start(_conf(bed, q, [_pool(bed, q, pool, target=1, max=2)]),
                 extra_args=["--dry-run"])
    d.wait_notify("READY=1", 30)
    d.wait_log(r"dry-run: %s: would create sluice-%s-\d+" % (re.escape(pool), re.escape(pool)),
               30)
    assert bedmod.wait_for(lambda: _count(d, "STATUS=") >= 6, timeout=WAIT)
    assert _pool_containers(bed, pool) == []
    s = d.status_json()
    ps = _pool_status(d, pool)
    assert s["dry_run"] is True and ps["desired"] == 2, ps
    assert ps["running"] == 0 and ps["starting"] == 0, ps
    assert d.stop() == 0
    assert _pool_containers(bed, pool) == []
    bed.wait_queue(q.name, ready=4, consumers=0, timeout=10)


def test_once(bed, q, lc):
    """SPEC "Command line": --once makes one reconcile pass (with a backlog: it creates and
    starts the workers) and exits 0."""
    pool = lc.pool("once")
    bed.declare_queue(q.name)
    q.publish(4, duration=30)
    bed.wait_queue(q.name, ready=4, timeout=30)
    d = lc.start(_conf(bed, q, [_pool(bed, q, pool, target=1, max=2)]), extra_args=["--once"])
    assert d.wait_exit(60) == 0, d.log_text()[-3000:]
    cs = _pool_containers(bed, pool)
    assert len(cs) == 2 and all(c["State"] == "running" for c in cs), (
        [(_cname(c), c["State"]) for c in cs], d.log_text()[-3000:])
    time.sleep(1.0)  # nothing more happens: sluiced is gone
    assert {c["Id"] for c in _pool_containers(bed, pool)} == {c["Id"] for c in cs}


# -- sluicectl and /metrics -------------------------------------------------------------------
def _metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{([^}]*)\} (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return None


def test_sluicectl_and_metrics(bed, q, lc, sluicectl_binary):
    """SPEC "Observability": /metrics (Prometheus text) has sluice_desired_workers and
    sluice_workers{state="running"} per pool, matching the status snapshot; `sluicectl status`
    shows the pool's row; `sluicectl explain POOL` shows the recommendation and the guard
    holding it back (max); an unknown pool exits 1 and a missing state dir 69."""
    pool = lc.pool("ctl")
    port = bedmod.free_port({bed.amqp_port, bed.mgmt_port})
    conf = _conf(bed, q, [_pool(bed, q, pool, target=1, max=1, cooldown=120,
                                down=(120, 1, 1))],
                 extra_top='metrics: { listen = "127.0.0.1:%d"; };' % port)
    bed.declare_queue(q.name)
    q.publish(3, duration=60)
    d = lc.start(conf)
    d.wait_notify("READY=1", 30)

    def scrape():
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            assert r.status == 200
            return r.read().decode()

    seen = {}

    def consistent():
        ps = _pool_status(d, pool)
        text = scrape()
        des = _metric(text, "sluice_desired_workers", pool=pool)
        run = _metric(text, "sluice_workers", pool=pool, state="running")
        seen.update(ps=ps, des=des, run=run)
        return (ps and ps["running"] == 1 and ps["desired"] == 1 and des == ps["desired"]
                and run == ps["running"])
    assert bedmod.wait_for(consistent, timeout=WAIT), (seen, d.log_text()[-3000:])

    r = _run([sluicectl_binary, "-s", d.runtime_dir, "status"])
    assert r.returncode == 0, r
    rows = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == [pool]]
    assert len(rows) == 1, r.stdout
    assert "1/0/0" in rows[0] and "0/1" in rows[0], r.stdout

    r = _run([sluicectl_binary, "-s", d.runtime_dir, "explain", pool])
    assert r.returncode == 0, r
    assert re.search(r"^recommendation\n  ceil\(depth / target\) = ceil\(\d+ / 1\) = [23]$",
                     r.stdout, re.M), r.stdout
    assert re.search(r"^guard\n  max: clamped to max 1$", r.stdout, re.M), r.stdout

    r = _run([sluicectl_binary, "-s", d.runtime_dir, "explain", "nosuchpool"])
    assert r.returncode == 1, r
    assert pool in r.stderr
    r = _run([sluicectl_binary, "-s", "/nonexistent", "status"])
    assert r.returncode == 69, r
    assert d.stop() == 0
