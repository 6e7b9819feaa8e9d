#!/usr/bin/python3
"""sluice demo: watch a pool of real Celery workers grow and shrink with its queue.

Run it through tools/demo.sh (which installs packages and builds sluice first):

    tools/demo.sh                   # until Ctrl-C
    tools/demo.sh --duration 90     # 90 s, then clean up and exit

It brings up a private Docker Engine and a private RabbitMQ (tests/integration/bed.py, loopback
only), writes a demo sluice.conf (pool "demo", queue "demo"), runs src/sluiced on it as a child
process, publishes bursts of real Celery tasks every ~40 s, and shows a live view refreshed
every second (a full-screen ANSI view on a terminal, one plain line per second otherwise).
Ctrl-C, SIGTERM or the end of --duration: stop publishing, SIGTERM sluiced, remove the demo
containers, stop the private servers, exit 0. See docs/demo.md.
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "integration"))
import bed as bedmod  # noqa: E402
import sluicecfg  # noqa: E402

POOL = "demo"
QUEUE = "demo"
DEMO_IMAGE = "sluice-celery:demo"   # imported only into a user's engine (--docker-socket)
HISTORY = 60                        # seconds of history in the sparklines
SPARK = " .:-=+*#%@"                # ASCII levels, lowest to highest


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="demo.sh", description="Watch sluice scale real Celery workers with queue depth.")
    ap.add_argument("--duration", type=float, default=0,
                    help="run this many seconds, then clean up and exit (default: until Ctrl-C)")
    ap.add_argument("--docker-socket", metavar="PATH",
                    help="use this Docker Engine instead of starting a private one")
    ap.add_argument("--rabbitmq-url", metavar="URL",
                    help="management API of an existing RabbitMQ (default: a private node)")
    ap.add_argument("--rabbitmq-user", metavar="U", help="its user (with --rabbitmq-url)")
    ap.add_argument("--rabbitmq-password-file", metavar="F",
                    help="file holding that user's password (with --rabbitmq-url)")
    ap.add_argument("--amqp-url", metavar="URL",
                    help="AMQP URL for the workers and the publisher (with --rabbitmq-url; "
                         "default amqp://U:PASSWORD@<host of --rabbitmq-url>:5672//)")
    ap.add_argument("--burst-every", type=float, default=40, metavar="S",
                    help="seconds between bursts of tasks (default 40)")
    ap.add_argument("--plain", action="store_true",
                    help="one plain line per second even on a terminal")
    ap.add_argument("--seed", type=int, help="random seed for the bursts (repeatable runs)")
    a = ap.parse_args(argv)
    ext = [a.rabbitmq_url, a.rabbitmq_user, a.rabbitmq_password_file]
    if any(ext) and not all(ext):
        ap.error("--rabbitmq-url, --rabbitmq-user and --rabbitmq-password-file go together")
    if a.amqp_url and not a.rabbitmq_url:
        ap.error("--amqp-url needs --rabbitmq-url")
    if a.docker_socket and not os.path.exists(a.docker_socket):
        ap.error("--docker-socket %s: no such file" % a.docker_socket)
    return a


class DemoSluiced(bedmod.Sluiced):
    """bed.Sluiced, but in its own session: a Ctrl-C on the terminal reaches the demo only,
    and the demo stops sluiced with SIGTERM, as systemd would."""

    def start(self, extra_args=None):
        env = dict(os.environ)
        env.update({"RUNTIME_DIRECTORY": self.runtime_dir})
        env.pop("NOTIFY_SOCKET", None)
        args = [self.binary, "-c", self.config_path] + self.extra_args + list(extra_args or [])
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.tmpdir,
                                     start_new_session=True)
        return self


class LogTail:
    """New lines of sluiced's log file, stamped with the time they were first seen."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.partial = b""
        self.lines = []
        self.last_text = None
        self.repeats = 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except OSError:
            return []
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        new = []
        stamp = time.strftime("%H:%M:%S")
        for raw in parts:
            line = raw.decode(errors="replace").rstrip()
            if len(line) > 3 and line[0] == "<" and line[2] == ">":
                line = line[3:]         # the journald priority prefix
            if not line:
                continue
            text = "sluiced: " + line
            if text == self.last_text:
                # the same message again (e.g. "depth unknown" every tick): one line, counted
                self.repeats += 1
                self.lines[-1] = "%s %s (x%d)" % (stamp, text, self.repeats)
                continue
            self.last_text, self.repeats = text, 1
            self.add("%s %s" % (stamp, text))
            new.append("%s %s" % (stamp, text))
        return new

    def add(self, line):
        self.lines.append(line)
        if not line[9:].startswith("sluiced: "):
            self.last_text = None
        del self.lines[:-200]


def spark(values, top):
    out = []
    for v in values:
        if v is None:
            out.append("?")
        elif v <= 0 or top <= 0:
            out.append(" " if v <= 0 else SPARK[1])
        else:
            out.append(SPARK[max(1, min(len(SPARK) - 1,
                                        int(round(v / top * (len(SPARK) - 1)))))])
    return "".join(out)


class Demo:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.bed = None
        self.sluiced = None
        self.work = None                # our temp dir: config, run dir, results, log
        self.results = None
        self.imported_image = None      # image we imported into the user's engine
        self.delete_queue_at_end = False
        self.published = 0
        self.bursts = 0
        self.next_burst = None
        self.hist_depth = []
        self.hist_workers = []
        self.peak = 0
        self.seen_down_after_peak = False
        self.t0 = time.monotonic()
        self.tty = sys.stdout.isatty() and not args.plain
        self.mgmt_base = None
        self.mgmt_auth = None

    # -- setup -----------------------------------------------------------------------
    def say(self, msg):
        sys.stderr.write("[demo %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    def setup(self):
        a = self.args
        self.work = tempfile.mkdtemp(prefix="sluice-demo.")
        os.chmod(self.work, 0o755)
        self.results = os.path.join(self.work, "results")
        os.makedirs(os.path.join(self.results, "started"))

        self.say("starting %s" % " and ".join(
            x for x, w in (("a private dockerd", not a.docker_socket),
                           ("a private RabbitMQ", not a.rabbitmq_url)) if w)
            if not (a.docker_socket and a.rabbitmq_url) else "using the given servers")
        b = bedmod.Bed(docker=not a.docker_socket, rabbit=not a.rabbitmq_url)
        self.bed = b
        b.start()

        if a.docker_socket:
            b.docker_socket = os.path.abspath(a.docker_socket)
            dk = bedmod.Docker(b.docker_socket)
            if not dk.ping():
                raise bedmod.BedError("no Docker Engine answers at %s" % b.docker_socket)
            b.celery_image = DEMO_IMAGE
            st, _ = dk("GET", "/images/%s/json" % DEMO_IMAGE)
            if st != 200:
                dk.import_image(DEMO_IMAGE, bedmod.celery_skeleton_tar())
                self.imported_image = DEMO_IMAGE
            left = dk.containers({"io.sluice.pool": POOL})
            if left:
                self.say("note: %d container(s) labelled io.sluice.pool=%s already exist; "
                         "sluiced adopts those it manages" % (len(left), POOL))
        # else: the private engine already holds bed.celery_image (sluice-celery:test)

        if a.rabbitmq_url:
            with open(a.rabbitmq_password_file) as f:
                pw = f.read().strip()
            u = urllib.parse.urlsplit(a.rabbitmq_url)
            b.mgmt_url = a.rabbitmq_url.rstrip("/")
            b.user, b.password = a.rabbitmq_user, pw
            b.amqp_url = a.amqp_url or "amqp://%s:%s@%s:5672//" % (
                urllib.parse.quote(b.user, safe=""), urllib.parse.quote(pw, safe=""),
                u.hostname or "127.0.0.1")
            b.amqp_port = urllib.parse.urlsplit(b.amqp_url).port or 5672
            self.mgmt_base = b.mgmt_url
            self.mgmt_auth = "Basic " + base64.b64encode(
                ("%s:%s" % (b.user, pw)).encode()).decode()
            st = self._mgmt("GET", "/api/queues/%2F/" + QUEUE)
            if st == 0:
                raise bedmod.BedError("no RabbitMQ management API answers at %s" % b.mgmt_url)
            self.delete_queue_at_end = st == 404

        # Declared now (durable, no arguments: as Celery declares it), so that the management
        # API has its statistics by the first burst; sluiced reads a missing queue as unknown.
        if self.mgmt_base:
            self._mgmt("PUT", "/api/queues/%2F/" + QUEUE, {
                "durable": True, "auto_delete": False, "arguments": {}})
        else:
            b.declare_queue(QUEUE)
        up = time.monotonic() - self.t0
        self.say("servers up in %.1f s: docker %s, rabbitmq %s" % (
            up, b.docker_socket, b.mgmt_url))

        pool = sluicecfg.pool_conf(
            b, POOL, QUEUE, self.results, target=5, min=0, max=6, cooldown=15,
            up=(0, 2, 2), down=(10, 1, 3), stop_timeout=30)
        conf = sluicecfg.config(b, [pool], self.work, interval=1, timeout=2.0)
        if a.rabbitmq_url:
            # the user's own password file, not a copy of the secret
            pwf = os.path.join(self.work, "rabbitmq.password")
            conf = conf.replace('"%s"' % pwf, '"%s"' % os.path.abspath(
                a.rabbitmq_password_file))
            os.unlink(pwf)
        self.sluiced = DemoSluiced(bedmod.repo_binary("sluiced"), conf, self.work)
        rc = subprocess.run([self.sluiced.binary, "-t", "-c", self.sluiced.config_path],
                            capture_output=True, text=True)
        if rc.returncode != 0:
            raise bedmod.BedError("the demo config does not validate:\n%s%s" % (
                rc.stdout, rc.stderr))
        self.say("config %s; starting %s -c %s" % (
            self.sluiced.config_path, self.sluiced.binary, self.sluiced.config_path))
        self.sluiced.start()
        self.log = LogTail(self.sluiced.log_path)
        ok = bedmod.wait_for(lambda: (not self.sluiced.alive()) or self.sluiced.status_json(),
                             timeout=30, interval=0.2)
        if not self.sluiced.alive() or not ok:
            raise bedmod.BedError("sluiced did not come up:\n%s" %
                                  self.sluiced.log_text()[-3000:])
        self.up_seconds = time.monotonic() - self.t0
        self.say("demo up in %.1f s (sluiced pid %d); first burst in 5 s%s" % (
            self.up_seconds, self.sluiced.pid,
            "" if self.args.duration <= 0 else "; running %g s" % self.args.duration))
        self.run_t0 = time.monotonic()
        # The first burst comes 5 s in. The management API has no statistics for a new queue
        # for ~10 s: until then sluiced shows the depth as unknown and holds (never zero).
        self.next_burst = self.run_t0 + 5
        self.cleared = False

    def _mgmt(self, method, path, body=None):
        hdrs = {"Authorization": self.mgmt_auth}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.mgmt_base + path, data=data, method=method,
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    # -- the loop --------------------------------------------------------------------
    def publish_burst(self):
        n = self.rng.randint(20, 60)
        if self.bursts == 0:
            n = 40
        self.bursts += 1
        app = self.bed.celery_app()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                tid = "b%02d-%03d-%s" % (self.bursts, i, os.urandom(3).hex())
                app.send_task("tasks.work", args=[tid, round(self.rng.uniform(0.5, 2.0), 2)],
                              queue=QUEUE, task_id=tid, producer=producer)
        self.published += n
        self.last_burst = (time.strftime("%H:%M:%S"), n)
        line = "%s publisher: a burst of %d tasks (0.5-2 s each) to queue %s" % (
            time.strftime("%H:%M:%S"), n, QUEUE)
        self.log.add(line)
        return line

    def pool_status(self):
        s = self.sluiced.status_json()
        if not s:
            return None
        for p in s.get("pools", []):
            if p.get("name") == POOL:
                return p
        return None

    def loop(self):
        end = None
        if self.args.duration > 0:
            end = self.run_t0 + self.args.duration
        tick = self.run_t0
        if self.tty:
            sys.stdout.write("\x1b[?25l")  # hide the cursor
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                return "duration reached"
            if not self.sluiced.alive():
                return "sluiced exited with status %s" % self.sluiced.proc.returncode
            events = []
            if now >= self.next_burst:
                try:
                    events.append(self.publish_burst())
                except Exception as e:  # noqa: BLE001 - a demo keeps going
                    events.append("%s publisher: publishing failed: %s" % (
                        time.strftime("%H:%M:%S"), e))
                self.next_burst = now + self.args.burst_every
            events += self.log.poll()
            p = self.pool_status()
            self.record(p)
            if self.tty:
                self.draw(p)
            else:
                self.plain(p, events)
            tick += 1.0
            time.sleep(max(0.05, tick - time.monotonic()))

    def record(self, p):
        depth = workers = None
        if p is not None:
            depth = p.get("depth") if p.get("depth_valid") else None
            workers = p.get("running", 0) + p.get("starting", 0)
            if workers > self.peak:
                self.peak = workers
            if self.peak >= 2 and workers < self.peak:
                self.seen_down_after_peak = True
        self.hist_depth.append(depth)
        self.hist_workers.append(workers)
        del self.hist_depth[:-HISTORY]
        del self.hist_workers[:-HISTORY]
        self.all_workers = getattr(self, "all_workers", []) + [workers]

    def done(self):
        return len(bedmod.done_ids(self.results))

    @staticmethod
    def fmt_depth(p):
        if p is None:
            return "?"
        if not p.get("depth_valid"):
            return "unknown"
        return "%g" % p.get("depth", 0)

    def plain(self, p, events):
        for e in events:
            print("    " + e)
        el = time.monotonic() - self.run_t0
        if p is None:
            print("%s +%3ds  (no status yet)" % (time.strftime("%H:%M:%S"), el))
        else:
            print("%s +%3ds  depth %-7s workers %d running, %d starting, %d draining  "
                  "desired %d  tasks done %d/%d  %s" % (
                      time.strftime("%H:%M:%S"), el, self.fmt_depth(p), p.get("running", 0),
                      p.get("starting", 0), p.get("draining", 0), p.get("desired", 0),
                      self.done(), self.published, self.workers_bar(p)))
        sys.stdout.flush()

    @staticmethod
    def workers_bar(p):
        r, s, d, mx = (p.get("running", 0), p.get("starting", 0), p.get("draining", 0),
                       p.get("max", 6))
        return "[" + "#" * r + "+" * s + "-" * d + "." * max(0, mx - r - s - d) + "]"

    def draw(self, p):
        cols = shutil.get_terminal_size((100, 30)).columns
        rows = shutil.get_terminal_size((100, 30)).lines
        el = time.monotonic() - self.run_t0
        out = []
        title = "sluice demo  pool %r  queue %r  %s  (+%ds)" % (
            POOL, QUEUE, time.strftime("%H:%M:%S"), el)
        if self.args.duration > 0:
            title += "  ends in %ds" % max(0, self.args.duration - el)
        else:
            title += "  Ctrl-C to stop"
        out.append("\x1b[1m" + title + "\x1b[0m")
        out.append("")
        if p is None:
            out.append("waiting for sluiced's first status ...")
        else:
            d = p.get("decision") or {}
            out.append("queue depth   %-8s (ready+unacked; target %g tasks per worker)" % (
                self.fmt_depth(p), p.get("target", 5)))
            out.append("workers       %s  %d running, %d starting, %d draining" % (
                self.workers_bar(p), p.get("running", 0), p.get("starting", 0),
                p.get("draining", 0)))
            out.append("desired       %-3d (min %d, max %d; recommendation %s)" % (
                p.get("desired", 0), p.get("min", 0), p.get("max", 0),
                d.get("recommendation", "?")))
            g = p.get("guard") or "none"
            gd = p.get("guard_detail") or ""
            out.append("holding back  %s%s" % (g, (": " + gd) if gd and g != "none" else ""))
            done = self.done()
            out.append("tasks         %d done of %d published in %d burst%s (%d to go); "
                       "next burst in %ds"
                       % (done, self.published, self.bursts,
                          "" if self.bursts == 1 else "s", self.published - done,
                          max(0, self.next_burst - time.monotonic())))
            out.append("              (the management API counts lag the queue by up to 5 s)")
        out.append("")
        hd = [None] * (HISTORY - len(self.hist_depth)) + self.hist_depth
        hw = [None] * (HISTORY - len(self.hist_workers)) + self.hist_workers
        top = max([v for v in hd if v is not None] + [1])
        out.append("last %ds (oldest left, newest right)" % HISTORY)
        out.append("depth   |%s| max %g" % (spark(
            [v if v is not None else 0 for v in hd], top), top))
        out.append("workers |%s| max %d" % (spark(
            [v if v is not None else 0 for v in hw], 6), 6))
        out.append("")
        out.append("sluiced log (%s):" % self.sluiced.log_path)
        room = max(3, rows - len(out) - 1)
        for line in self.log.lines[-room:]:
            out.append("  " + line)
        buf = ("\x1b[H" if self.cleared else "\x1b[H\x1b[2J") + "".join(line[:cols - 1] + "\x1b[K\n" for line in out) + "\x1b[J"
        sys.stdout.write(buf)
        sys.stdout.flush()
        self.cleared = True

    # -- teardown --------------------------------------------------------------------
    def summary(self, why):
        w = [v if v is not None else 0 for v in getattr(self, "all_workers", [])]
        final = w[-1] if w else 0
        print("demo: %s" % why)
        print("demo: workers over the run (one char a second, max 6): |%s|" % spark(w, 6))
        print("demo: peak %d workers, last %d; %s; %d tasks done of %d published in %d "
              "burst%s; up in %.1f s" % (
                  self.peak, final,
                  "grew and shrank" if self.peak >= 2 and self.seen_down_after_peak
                  else "did not shrink yet" if self.peak >= 2 else "did not grow",
                  self.done(), self.published, self.bursts, "" if self.bursts == 1 else "s",
                  getattr(self, "up_seconds", 0)))
        sys.stdout.flush()

    def cleanup(self):
        if self.sluiced is not None:
            try:
                rc = self.sluiced.stop(timeout=15)
                self.say("sluiced stopped (SIGTERM, exit status %s)" % rc)
            except Exception as e:  # noqa: BLE001
                self.say("stopping sluiced: %s" % e)
            finally:
                self.sluiced.close()
        b = self.bed
        if b is not None and b.docker_socket:
            try:
                dk = bedmod.Docker(b.docker_socket)
                cs = dk.containers({"io.sluice.pool": POOL})
                for c in cs:
                    dk.remove(c["Id"])
                self.say("removed %d demo container(s) (label io.sluice.pool=%s)" % (
                    len(cs), POOL))
                if self.imported_image:
                    dk("DELETE", "/images/%s" % self.imported_image)
            except Exception as e:  # noqa: BLE001
                self.say("removing demo containers: %s" % e)
        if self.delete_queue_at_end:
            self._mgmt("DELETE", "/api/queues/%2F/" + QUEUE)
        if b is not None:
            try:
                b.stop()
            except Exception as e:  # noqa: BLE001
                self.say("stopping the private servers: %s" % e)
        if self.work:
            bedmod.remove_tree(self.work)
        self.say("cleaned up")


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("demo: must run as root: sudo tools/demo.sh\n")
        return 1
    for name in ("sluiced", "sluicectl"):
        if not os.access(bedmod.repo_binary(name), os.X_OK):
            sys.stderr.write("demo: %s not built; run tools/demo.sh\n" % bedmod.repo_binary(name))
            return 1
    bedmod.install_signal_handlers()   # SIGINT/SIGTERM/SIGHUP -> KeyboardInterrupt
    demo = Demo(args)
    why, rc = "stopped", 0
    try:
        demo.setup()
        why = demo.loop()
        if why.startswith("sluiced exited"):
            rc = 1
            sys.stderr.write(demo.sluiced.log_text()[-3000:])
    except KeyboardInterrupt as e:
        why = "interrupted (%s)" % (e or "SIGINT")
    except bedmod.BedError as e:
        why, rc = "could not start: %s" % e, 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)   # a second Ctrl-C must not cut cleanup short
        if demo.tty:
            sys.stdout.write("\x1b[?25h\n")   # the cursor back
            sys.stdout.flush()
        try:
            if demo.sluiced is not None and demo.sluiced.proc is not None:
                demo.summary(why)
            else:
                sys.stderr.write("demo: %s\n" % why)
        finally:
            demo.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
