"""sluice test bed: a private dockerd, a private RabbitMQ node and real Celery workers.

Plain Python (standard library, plus python3-celery for publish()), no pytest, so that
tests/integration/conftest.py and tools/demo can both use it:

    import sys; sys.path.insert(0, "<repo>/tests/integration")
    import bed
    with bed.Bed() as b:        # or b = bed.Bed(); b.start(); ...; b.stop()
        ...

Everything the bed starts lives under two mktemp directories and in processes whose ids it
keeps; stop() removes the containers, stops dockerd and RabbitMQ (and the epmd it started, on
its own private port), unmounts what is left under its directories and deletes them. stop() is
idempotent and is also registered with atexit; install_signal_handlers() turns SIGTERM/SIGHUP
into KeyboardInterrupt so that try/finally and pytest's teardown run.

Network rule: everything listens on and talks to 127.0.0.1 only; dockerd runs with
--bridge=none and workers use the host network.
"""

import atexit
import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
APP_DIR = os.path.join(REPO_ROOT, "tests", "app")
DOCKER_API = "/v1.41"
BUSYBOX_IMAGE = "sluice-busybox:test"
CELERY_IMAGE = "sluice-celery:test"


class BedError(RuntimeError):
    """A server of the bed could not be started (a skip locally, a failure with CI=true)."""


def log(msg):
    sys.stderr.write("[bed %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def free_port(avoid=()):
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in avoid:
            return port
    raise BedError("no free port")


def port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_for(predicate, timeout=10.0, interval=0.2, what=None):
    """Poll predicate() until it returns a truthy value (returned) or timeout (returns the
    last value, falsy). Exceptions from predicate count as falsy."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - a poll that fails is "not yet"
            last = None
            if what:
                log("wait_for %s: %r" % (what, e))
        if last:
            return last
        if time.monotonic() >= deadline:
            return last
        time.sleep(interval)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30.0):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _pids_of_session(sid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            if os.getsid(pid) == sid:
                out.append(pid)
        except OSError:
            pass
    return out


def _pids_mentioning(text):
    """Processes whose command line mentions text (our temp dir): containerd shims etc."""
    out = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if text.encode() in cmd:
            out.append(int(d))
    return out


def _kill_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        # state is the field after "(comm)"; Z = zombie, counts as gone
        return st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def stop_session(proc, term_timeout=15.0, sig=signal.SIGTERM):
    """Stop a process we started with start_new_session=True, and everything in its session."""
    if proc is None:
        return
    sid = proc.pid
    pids = [p for p in _pids_of_session(sid)] or [proc.pid]
    _kill_pids(pids, sig)
    deadline = time.monotonic() + term_timeout
    while time.monotonic() < deadline:
        if proc.poll() is None:
            time.sleep(0.1)
            continue
        if not [p for p in _pids_of_session(sid) if _alive(p)]:
            break
        time.sleep(0.1)
    left = [p for p in _pids_of_session(sid) if _alive(p)]
    if proc.poll() is None:
        left.append(proc.pid)
    if left:
        log("SIGKILL to %s" % left)
        _kill_pids(left, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def unmount_under(path):
    """Unmount (lazily, deepest first) every mount point at or below path."""
    path = os.path.realpath(path)
    for _ in range(3):
        mounts = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4].replace("\\040", " ")
                    if mp == path or mp.startswith(path + "/"):
                        mounts.append(mp)
        except OSError:
            return
        if not mounts:
            return
        for mp in sorted(set(mounts), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)


def remove_tree(path):
    if not path or not os.path.exists(path):
        return
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        # files held by a dying process; retry once
        time.sleep(0.5)
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        log("could not remove %s" % path)


class Docker:
    """A tiny Docker Engine API client over the Unix socket."""

    def __init__(self, socket_path):
        self.socket_path = socket_path

    def raw(self, method, path, body=None, headers=None, timeout=60.0, prefix=True):
        conn = UnixHTTPConnection(self.socket_path, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if body is not None and not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, (DOCKER_API if prefix else "") + path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data
        finally:
            conn.close()

    def __call__(self, method, path, body=None, timeout=60.0):
        """(status, parsed JSON or text or None)."""
        status, data = self.raw(method, path, body, timeout=timeout)
        if not data:
            return status, None
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")

    def ping(self):
        try:
            status, data = self.raw("GET", "/_ping", timeout=2.0, prefix=False)
            return status == 200 and data.strip() == b"OK"
        except OSError:
            return False

    def containers(self, label_filters=None, all=True):
        q = {"all": "1" if all else "0"}
        if label_filters:
            if isinstance(label_filters, dict):
                label_filters = ["%s=%s" % kv for kv in label_filters.items()]
            elif isinstance(label_filters, str):
                label_filters = [label_filters]
            q["filters"] = json.dumps({"label": list(label_filters)})
        status, data = self("GET", "/containers/json?" + urllib.parse.urlencode(q))
        if status != 200:
            raise RuntimeError("list containers: %s %s" % (status, data))
        return data

    def remove(self, cid, force=True):
        status, data = self("DELETE", "/containers/%s?force=%s&v=1" % (cid, "1" if force else "0"))
        return status in (204, 404)

    def remove_all_containers(self):
        for c in self.containers():
            self.remove(c["Id"])

    def import_image(self, repo_tag, tar_bytes):
        repo, tag = repo_tag.rsplit(":", 1)
        q = urllib.parse.urlencode({"fromSrc": "-", "repo": repo, "tag": tag})
        status, data = self.raw("POST", "/images/create?" + q, body=tar_bytes,
                                headers={"Content-Type": "application/x-tar"}, timeout=120)
        if status != 200 or b'"errorDetail"' in data:
            raise BedError("docker import %s: %s %s" % (repo_tag, status, data[:500]))


def _tar_add_dir(tf, name, mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = int(time.time())
    tf.addfile(ti)


def _tar_add_link(tf, name, target):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    ti.mtime = int(time.time())
    tf.addfile(ti)


def busybox_tar():
    import io
    bb = "/bin/busybox"
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "sbin"):
            _tar_add_dir(tf, d, 0o1777 if d == "tmp" else 0o755)
        tf.add(bb, arcname="bin/busybox")
        for a in applets:
            if a != "busybox":
                _tar_add_link(tf, "bin/" + a, "busybox")
    return buf.getvalue()


def celery_skeleton_tar():
    """The merged-/usr skeleton: run with /usr and /etc bind-mounted read-only."""
    import io
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("etc", "usr", "tmp", "proc", "sys", "dev", "sbin", "app", "results", "run",
                  "var", "var/tmp", "root"):
            _tar_add_dir(tf, d, 0o1777 if d in ("tmp", "var/tmp") else 0o755)
        for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            _tar_add_link(tf, name, target)
    return buf.getvalue()


class Bed:
    """The whole test bed. Attributes after start():

    docker_socket, mgmt_url, mgmt_port, amqp_port, amqp_url, user, password, node,
    busybox_image, celery_image, app_dir, tmpdir, storage_driver, startup_seconds.
    """

    def __init__(self, app_dir=APP_DIR, log_dir=None, docker=True, rabbit=True):
        """docker/rabbit: which private servers start() brings up (the demo may be given
        either by the user)."""
        self.app_dir = app_dir
        self.want_docker = docker
        self.want_rabbit = rabbit
        self.busybox_image = BUSYBOX_IMAGE
        self.celery_image = CELERY_IMAGE
        self.user = "sluice"
        self.password = secrets.token_hex(12)
        self.node = "sluicetest-%d-%s@localhost" % (os.getpid(), secrets.token_hex(2))
        self.tmpdir = None
        self.docker_dir = None
        self.rabbit_dir = None
        self.docker_socket = None
        self._dockerd = None
        self._rabbit = None
        self._epmd = None
        self._celery_app = None
        self._stopped = False
        self._started = False
        self._lock = threading.Lock()
        self.storage_driver = None
        self.startup_seconds = None
        self.log_dir = log_dir

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if os.geteuid() != 0:
            raise BedError("the test bed needs root (dockerd, rabbitmq user)")
        t0 = time.monotonic()
        atexit.register(self.stop)
        self._started = True
        self.tmpdir = tempfile.mkdtemp(prefix="sluice-bed.")
        os.chmod(self.tmpdir, 0o755)
        self.docker_dir = os.path.join(self.tmpdir, "docker")
        self.rabbit_dir = os.path.join(self.tmpdir, "rabbit")
        os.mkdir(self.docker_dir, 0o700)
        # start both servers at once; each takes a few seconds
        errors = []

        def run(fn):
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        fns = ([self._start_docker] if self.want_docker else []) + \
              ([self._start_rabbit] if self.want_rabbit else [])
        th = [threading.Thread(target=run, args=(f,)) for f in fns]
        for t in th:
            t.start()
        for t in th:
            t.join()
        if errors:
            raise errors[0]
        self.startup_seconds = time.monotonic() - t0
        up = []
        if self.want_docker:
            up.append("docker %s (%s)" % (self.docker_socket, self.storage_driver))
        if self.want_rabbit:
            up.append("rabbitmq %s amqp %d mgmt %d" % (self.node, self.amqp_port,
                                                       self.mgmt_port))
        log("bed up in %.1f s: %s" % (self.startup_seconds, ", ".join(up) or "nothing"))
        return self

    def stop(self):
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
        # a second Ctrl-C must not cut the teardown short
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                old[s] = signal.signal(s, signal.SIG_IGN)
            except (ValueError, OSError):  # not the main thread
                pass
        try:
            self._teardown()
        finally:
            for s, h in old.items():
                try:
                    signal.signal(s, h)
                except (ValueError, OSError, TypeError):
                    pass

    def _teardown(self):
        t0 = time.monotonic()
        if self._celery_app is not None:
            try:
                self._celery_app.close()
            except Exception:  # noqa: BLE001
                pass
        if self._dockerd is not None:
            if self._dockerd.poll() is None:
                try:
                    d = Docker(self.docker_socket)
                    for c in d.containers():
                        # no grace: the bed is going away
                        d.remove(c["Id"])
                except Exception as e:  # noqa: BLE001
                    log("removing containers: %r" % e)
            stop_session(self._dockerd, term_timeout=20)
            # containerd shims run in their own sessions; they mention our dir
            if self.docker_dir:
                left = _pids_mentioning(self.docker_dir)
                if left:
                    _kill_pids(left, signal.SIGKILL)
                    time.sleep(0.3)
        if self._rabbit is not None:
            stop_session(self._rabbit, term_timeout=20)
        if self._epmd is not None:
            stop_session(self._epmd, term_timeout=5)
        if self.rabbit_dir:
            left = _pids_mentioning(self.rabbit_dir)
            if left:
                log("leftover rabbit processes %s, killing" % left)
                _kill_pids(left, signal.SIGKILL)
        if self.tmpdir:
            if self.log_dir:
                self._save_logs()
            remove_tree(self.tmpdir)
        log("bed down in %.1f s" % (time.monotonic() - t0))

    def _save_logs(self):
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            for src, dst in ((os.path.join(self.docker_dir, "dockerd.log"), "dockerd.log"),
                             (os.path.join(self.rabbit_dir, "stdout.log"), "rabbitmq.log")):
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(self.log_dir, dst))
        except OSError:
            pass

    # -- dockerd -----------------------------------------------------------------------
    def _start_docker(self):
        if not shutil.which("dockerd"):
            raise BedError("dockerd not installed (apt-get install docker.io)")
        d = self.docker_dir
        self.docker_socket = os.path.join(d, "docker.sock")
        drivers = [None, "vfs"]
        if os.environ.get("SLUICE_TEST_STORAGE_DRIVER"):
            drivers = [os.environ["SLUICE_TEST_STORAGE_DRIVER"]]
        last = ""
        for drv in drivers:
            cmd = ["dockerd", "--data-root", d + "/data", "--exec-root", d + "/exec",
                   "-H", "unix://" + self.docker_socket, "--pidfile", d + "/docker.pid",
                   "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false",
                   "--userland-proxy=false"]
            if drv:
                cmd.append("--storage-driver=" + drv)
            logf = open(os.path.join(d, "dockerd.log"), "ab")
            self._dockerd = subprocess.Popen(cmd, stdout=logf, stderr=logf,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            logf.close()
            dk = Docker(self.docker_socket)
            ok = wait_for(lambda: self._dockerd.poll() is not None or dk.ping(), timeout=40)
            if ok and self._dockerd.poll() is None:
                try:
                    self._make_images(dk)
                    status, info = dk("GET", "/info")
                    self.storage_driver = info.get("Driver") if status == 200 else drv
                    return
                except BedError as e:
                    last = str(e)
            else:
                last = self._tail(os.path.join(d, "dockerd.log"))
            log("dockerd with storage driver %s failed: %s" % (drv or "default", last[-800:]))
            stop_session(self._dockerd, term_timeout=10)
            self._dockerd = None
            unmount_under(d)
            for sub in ("data", "exec"):
                shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
        raise BedError("dockerd did not start: %s" % last[-1500:])

    def _make_images(self, dk):
        dk.import_image(self.busybox_image, busybox_tar())
        dk.import_image(self.celery_image, celery_skeleton_tar())
        # prove the storage driver can run a container at all
        name = "sluice-bed-probe-%s" % secrets.token_hex(3)
        st, c = dk("POST", "/containers/create?name=" + name, {
            "Image": self.busybox_image, "Cmd": ["true"],
            "HostConfig": {"NetworkMode": "none"}})
        if st != 201:
            raise BedError("probe create: %s %s" % (st, c))
        try:
            st, r = dk("POST", "/containers/%s/start" % c["Id"])
            if st not in (204, 304):
                raise BedError("probe start: %s %s" % (st, r))
            st, r = dk("POST", "/containers/%s/wait" % c["Id"], timeout=30)
            if st != 200 or r.get("StatusCode") != 0:
                raise BedError("probe wait: %s %s" % (st, r))
        finally:
            dk.remove(c["Id"])

    @staticmethod
    def _tail(path, n=4000):
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- rabbitmq ----------------------------------------------------------------------
    def _start_rabbit(self):
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if not os.path.exists(server) or not shutil.which("epmd"):
            raise BedError("rabbitmq-server not installed (apt-get install rabbitmq-server)")
        r = self.rabbit_dir
        for sub in ("", "mnesia", "log"):
            os.makedirs(os.path.join(r, sub), exist_ok=True)
        used = set()
        self.amqp_port = free_port(used)
        used.add(self.amqp_port)
        self.mgmt_port = free_port(used)
        used.add(self.mgmt_port)
        self.epmd_port = free_port(used)
        used.add(self.epmd_port)
        # the distribution port; CLI tools use dist+10000..dist+10010
        for _ in range(100):
            p = free_port(used)
            if p < 50000 and all(port_is_free(p + 10000 + i) for i in range(11)):
                self.dist_port = p
                break
        else:
            raise BedError("no free distribution port")
        cookie = secrets.token_hex(16)
        self._cookie = cookie
        with open(os.path.join(r, ".erlang.cookie"), "w") as f:
            f.write(cookie)
        os.chmod(os.path.join(r, ".erlang.cookie"), 0o400)
        with open(os.path.join(r, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        with open(os.path.join(r, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.amqp_port)
            f.write("management.tcp.ip = 127.0.0.1\n")
            f.write("management.tcp.port = %d\n" % self.mgmt_port)
            f.write("loopback_users.guest = true\n")
            f.write("log.console = true\nlog.console.level = warning\n")
            f.write("log.file.level = info\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", r], check=True)
        env = self._rabbit_env()
        # our own epmd on a private port: nothing shared with other nodes on the machine
        self._epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        logf = open(os.path.join(r, "stdout.log"), "ab")
        self._rabbit = subprocess.Popen(
            ["setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups", server],
            env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=r,
            start_new_session=True)
        logf.close()
        ok = wait_for(lambda: self._rabbit.poll() is not None or self._mgmt_ready(),
                      timeout=60, interval=0.3)
        if not ok or self._rabbit.poll() is not None:
            raise BedError("rabbitmq did not start: %s" % self._tail(
                os.path.join(r, "stdout.log"))[-1500:])
        # the user sluice tests and the daemon use: administrator, all permissions on /
        self.mgmt("PUT", "/api/users/%s" % self.user,
                  {"password": self.password, "tags": "administrator"}, auth=("guest", "guest"))
        self.mgmt("PUT", "/api/permissions/%2F/" + self.user,
                  {"configure": ".*", "write": ".*", "read": ".*"}, auth=("guest", "guest"))
        st, _ = self.mgmt("GET", "/api/whoami")
        if st != 200:
            raise BedError("user %s does not work: %s" % (self.user, st))
        self.mgmt_url = "http://127.0.0.1:%d" % self.mgmt_port
        self.amqp_url = "amqp://%s:%s@127.0.0.1:%d//" % (self.user, self.password, self.amqp_port)

    def _rabbit_env(self):
        r = self.rabbit_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": r,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_MNESIA_BASE": r + "/mnesia",
            "RABBITMQ_LOG_BASE": r + "/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": r + "/enabled_plugins",
            "RABBITMQ_CONFIG_FILE": r + "/rabbitmq",
            "RABBITMQ_PID_FILE": r + "/rabbit.pid",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        })
        return env

    def rabbitmqctl(self, *args, timeout=60):
        """Run rabbitmqctl against our node (as the rabbitmq user, with our cookie)."""
        return subprocess.run(
            ["setpriv", "--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups",
             "/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node] + list(args),
            env=self._rabbit_env(), cwd=self.rabbit_dir, capture_output=True, text=True,
            timeout=timeout)

    def _mgmt_ready(self):
        st, _ = self.mgmt("GET", "/api/overview", auth=("guest", "guest"), timeout=2)
        return st == 200

    def mgmt(self, method, path, body=None, auth=None, timeout=10):
        """(status, parsed JSON or None) from the management API."""
        user, pw = auth or (self.user, self.password)
        conn = http.client.HTTPConnection("127.0.0.1", self.mgmt_port, timeout=timeout)
        try:
            hdrs = {"Authorization": "Basic " + base64.b64encode(
                ("%s:%s" % (user, pw)).encode()).decode()}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        except OSError:
            return 0, None
        finally:
            conn.close()

    # -- docker helpers ------------------------------------------------------------------
    @property
    def dk(self):
        return Docker(self.docker_socket)

    def docker(self, method, path, body=None, timeout=60.0):
        """(status, json) from the Docker API (path without the /v1.41 prefix)."""
        return self.dk(method, path, body, timeout=timeout)

    def containers(self, label_filters=None, all=True):
        return self.dk.containers(label_filters, all=all)

    def remove_all_containers(self):
        self.dk.remove_all_containers()

    def run_container(self, body, name=None):
        """Create and start a container; returns its id."""
        path = "/containers/create" + ("?name=" + urllib.parse.quote(name) if name else "")
        st, c = self.docker("POST", path, body)
        if st != 201:
            raise RuntimeError("create container: %s %s" % (st, c))
        st, r = self.docker("POST", "/containers/%s/start" % c["Id"])
        if st not in (204, 304):
            raise RuntimeError("start container: %s %s" % (st, r))
        return c["Id"]

    def worker_spec(self, name, queue, results_dir, labels=None, extra_env=None,
                    broker_url=None, concurrency=1, extra_args=()):
        """The create body of a Celery worker container (also a model for sluice configs)."""
        env = [
            "CELERY_BROKER_URL=" + (broker_url or self.amqp_url),
            "RESULTS_DIR=/results",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "HOME=/tmp",
        ] + list(extra_env or [])
        return {
            "Image": self.celery_image,
            "Cmd": ["/usr/bin/python3", "-m", "celery", "-A", "tasks", "worker",
                    "--loglevel=info", "--prefetch-multiplier=1", "-n", name + "@%h",
                    "-Q", queue, "-c", str(concurrency), "--without-gossip",
                    "--without-mingle", "--without-heartbeat"] + list(extra_args),
            "Env": env,
            "WorkingDir": "/app",
            "Labels": dict(labels or {}),
            "StopSignal": "SIGTERM",
            "HostConfig": {
                "NetworkMode": "host",
                "Init": True,
                "Binds": ["/usr:/usr:ro", "/etc:/etc:ro", self.app_dir + ":/app:ro",
                          os.path.abspath(results_dir) + ":/results"],
                "RestartPolicy": {"Name": "no"},
            },
        }

    def run_worker(self, name, queue, results_dir, labels=None, extra_env=None,
                   broker_url=None, concurrency=1):
        """Start a Celery worker container consuming queue; returns the container id."""
        os.makedirs(results_dir, exist_ok=True)
        body = self.worker_spec(name, queue, results_dir, labels, extra_env, broker_url,
                                concurrency)
        return self.run_container(body, name=name)

    def container_logs(self, cid, tail=200):
        st, data = self.dk.raw("GET", "/containers/%s/logs?stdout=1&stderr=1&tail=%d"
                               % (cid, tail))
        # strip the 8-byte multiplexing headers
        out, i = [], 0
        while i + 8 <= len(data):
            n = int.from_bytes(data[i + 4:i + 8], "big")
            out.append(data[i + 8:i + 8 + n])
            i += 8 + n
        return b"".join(out).decode(errors="replace")

    def inspect(self, cid):
        st, c = self.docker("GET", "/containers/%s/json" % cid)
        return c if st == 200 else None

    def stop_container(self, cid, grace):
        """POST /containers/{id}/stop?t=grace; blocks until the container has exited."""
        st, r = self.docker("POST", "/containers/%s/stop?t=%d" % (cid, grace),
                            timeout=grace + 60)
        return st

    # -- rabbitmq helpers ----------------------------------------------------------------
    @staticmethod
    def _q(queue, vhost="/"):
        return "/api/queues/%s/%s" % (urllib.parse.quote(vhost, safe=""),
                                      urllib.parse.quote(queue, safe=""))

    def queue_stats(self, queue, vhost="/"):
        """The management API's view of a queue: dict with ready, unacked, messages, consumers
        (None where the API does not say yet), or None if the queue does not exist."""
        st, q = self.mgmt("GET", self._q(queue, vhost))
        if st == 404:
            return None
        if st != 200 or not isinstance(q, dict):
            raise RuntimeError("queue %s: HTTP %s %s" % (queue, st, q))
        return {"ready": q.get("messages_ready"),
                "unacked": q.get("messages_unacknowledged"),
                "messages": q.get("messages"),
                "consumers": q.get("consumers"),
                "raw": q}

    def wait_queue(self, queue, ready=None, unacked=None, consumers=None, timeout=30.0,
                   vhost="/"):
        """Wait until the management API shows these values (None = don't care; but the
        statistics must be present). Returns the stats; raises AssertionError on timeout."""
        last = {}

        def ok():
            s = self.queue_stats(queue, vhost)
            last["s"] = s
            if s is None or s["ready"] is None or s["unacked"] is None:
                return False
            return ((ready is None or s["ready"] == ready)
                    and (unacked is None or s["unacked"] == unacked)
                    and (consumers is None or s["consumers"] == consumers))

        if not wait_for(ok, timeout=timeout, interval=0.5):
            s = last.get("s")
            raise AssertionError("queue %s: wanted ready=%s unacked=%s consumers=%s, last %s" % (
                queue, ready, unacked, consumers,
                None if s is None else {k: s[k] for k in ("ready", "unacked", "consumers")}))
        return last["s"]

    def declare_queue(self, queue, vhost="/"):
        """A durable classic queue, the way Celery declares it (no arguments)."""
        st, r = self.mgmt("PUT", self._q(queue, vhost),
                          {"durable": True, "auto_delete": False, "arguments": {}})
        if st not in (201, 204):
            raise RuntimeError("declare %s: %s %s" % (queue, st, r))

    def purge_queue(self, queue, vhost="/"):
        st, _ = self.mgmt("DELETE", self._q(queue, vhost) + "/contents")
        return st in (204, 404)

    def delete_queue(self, queue, vhost="/"):
        st, _ = self.mgmt("DELETE", self._q(queue, vhost))
        return st in (204, 404)

    def celery_app(self):
        if self._celery_app is None:
            from celery import Celery  # python3-celery; imported lazily
            app = Celery("sluice-bed", broker=self.amqp_url)
            app.conf.update(task_ignore_result=True, result_backend=None,
                            broker_connection_retry_on_startup=True,
                            broker_connection_max_retries=3)
            self._celery_app = app
        return self._celery_app

    def publish(self, queue, n, duration=0.0, ids=None, prefix=None):
        """Publish n real Celery tasks tasks.work(id, duration) to queue; returns their ids
        (the ids are also what the workers record in the results dir)."""
        if ids is None:
            prefix = prefix or queue
            ids = ["%s-%04d-%s" % (prefix, i, uuid.uuid4().hex[:8]) for i in range(n)]
        ids = list(ids)
        app = self.celery_app()
        with app.producer_or_acquire() as producer:
            for tid in ids:
                app.send_task("tasks.work", args=[tid, duration], queue=queue,
                              task_id=tid, producer=producer)
        return ids


# -- results dirs (what tests/app/tasks.py writes) ------------------------------------------
def done_ids(results_dir):
    """Ids of the tasks that completed (files <results_dir>/<id>)."""
    try:
        return {n for n in os.listdir(results_dir)
                if not n.startswith(".") and os.path.isfile(os.path.join(results_dir, n))}
    except FileNotFoundError:
        return set()


def started_ids(results_dir):
    """Ids of the tasks that started (markers <results_dir>/started/<id>)."""
    try:
        return {n for n in os.listdir(os.path.join(results_dir, "started"))
                if not n.startswith(".")}
    except FileNotFoundError:
        return set()


_handlers_installed = False


def install_signal_handlers():
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so try/finally blocks,
    pytest's fixture teardown and atexit all run. Main thread only."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    # SIGINT too: a background job of a non-interactive shell starts with SIGINT ignored
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
    _handlers_installed = True


# -- the daemon under test ----------------------------------------------------------------
class Sluiced:
    """Runs src/sluiced as systemd would: NOTIFY_SOCKET, RUNTIME_DIRECTORY, a config file.

        d = Sluiced(binary, config_text, tmpdir, extra_args=["--verbose"])
        d.start(); d.wait_notify("READY=1", 10); ...; d.stop()
    """

    def __init__(self, binary, config_text, tmpdir, extra_args=(), env=None,
                 config_name="sluice.conf"):
        self.binary = binary
        self.tmpdir = os.path.abspath(tmpdir)
        os.makedirs(self.tmpdir, exist_ok=True)
        self.config_path = os.path.join(self.tmpdir, config_name)
        self.runtime_dir = os.path.join(self.tmpdir, "run")
        os.makedirs(self.runtime_dir, mode=0o755, exist_ok=True)
        self.log_path = os.path.join(self.tmpdir, "sluiced.log")
        self.notify_path = os.path.join(self.tmpdir, "notify.sock")
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.proc = None
        self.notifications = []  # (monotonic time, message)
        self._cond = threading.Condition()
        self._sock = None
        self._thread = None
        self._closing = False
        self.write_config(config_text)

    def write_config(self, text):
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(self.config_path, 0o600)

    def _listen(self):
        while not self._closing:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            now = time.monotonic()
            with self._cond:
                for msg in data.decode(errors="replace").split("\n"):
                    if msg:
                        self.notifications.append((now, msg))
                self._cond.notify_all()

    def start(self, extra_args=None):
        if self._sock is None:
            if os.path.exists(self.notify_path):
                os.unlink(self.notify_path)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(self.notify_path)
            self._sock.settimeout(0.2)
            self._thread = threading.Thread(target=self._listen, daemon=True)
            self._thread.start()
        env = dict(os.environ)
        env.update({"NOTIFY_SOCKET": self.notify_path, "RUNTIME_DIRECTORY": self.runtime_dir})
        env.update(self.extra_env)
        args = [self.binary, "-c", self.config_path] + self.extra_args + list(extra_args or [])
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.tmpdir)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def messages(self):
        with self._cond:
            return [m for _, m in self.notifications]

    def wait_notify(self, substring, timeout=10.0, after=None):
        """Wait for a notification containing substring (received after monotonic time
        `after` if given); returns the message, or raises AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, m in self.notifications:
                    if substring in m and (after is None or t >= after):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no notification %r within %.1f s; got %r; log:\n%s" % (
                        substring, timeout, [m for _, m in self.notifications][-20:],
                        self.log_text()[-3000:]))
                self._cond.wait(min(left, 0.5))

    def reload(self):
        """SIGHUP; returns the monotonic time it was sent (for wait_notify(after=))."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        return t

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("sluiced did not stop within %.1f s of SIGTERM" % timeout)
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode if self.proc else None

    def wait_exit(self, timeout=15.0):
        return self.proc.wait(timeout=timeout)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def wait_log(self, regex, timeout=10.0):
        """Wait for a log line matching regex; returns the match, or raises AssertionError."""
        rx = re.compile(regex)
        m = wait_for(lambda: rx.search(self.log_text()), timeout=timeout, interval=0.1)
        if not m:
            raise AssertionError("no log line /%s/ within %.1f s; log:\n%s" % (
                regex, timeout, self.log_text()[-3000:]))
        return m

    def status_json(self):
        """RUNTIME_DIRECTORY/status.json parsed, or None if absent or not (yet) valid."""
        try:
            with open(os.path.join(self.runtime_dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def close(self):
        """Teardown: kill the daemon if still alive, stop listening."""
        try:
            self.kill9()
        finally:
            self._closing = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._thread is not None:
                self._thread.join(timeout=2)
            if getattr(self, "_logf", None):
                self._logf.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def repo_binary(name):
    """Path of a built binary at the repo root (src/sluiced, src/sluicectl); the build dir
    can be overridden with SLUICE_BUILDDIR."""
    return os.path.join(os.environ.get("SLUICE_BUILDDIR", REPO_ROOT), "src", name)


if __name__ == "__main__":
    # python3 tests/integration/bed.py: bring the bed up, print it, wait for Ctrl-C.
    install_signal_handlers()
    b = Bed()
    try:
        b.start()
        print(json.dumps({k: getattr(b, k) for k in (
            "docker_socket", "mgmt_url", "amqp_port", "amqp_url", "user", "password", "node",
            "busybox_image", "celery_image", "app_dir", "storage_driver")}, indent=2))
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
