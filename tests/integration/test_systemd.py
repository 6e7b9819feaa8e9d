"""The operator path under a real systemd: the unit as shipped (systemd/sluiced.service, the
sysusers file, `make install`) runs sluiced, hardened, as user sluice, with the Docker socket.

SPEC.md section "systemd" (and "Security" for the credential): Type=notify, runs as `sluice`
with access to the Docker socket, SIGHUP reloads, SIGTERM leaves the workers running, exposure
at most 2.0; TESTBED.md section "systemd, for real" for how systemd boots here.

How (all through the bed's private dockerd, network "host", loopback only):
  * `make install DESTDIR=<stage> prefix=/usr sysconfdir=/etc` (as a distribution package
    would be configured); src/main.c is compiled once more with sysconfdir=/etc so that the
    installed sluiced's default config is /etc/sluice/sluice.conf, the path the unit relies on
    (the tree itself is usually configured with the default prefix /usr/local);
  * the host's /usr with the staged usr/ on top (a read-only overlay mount) becomes the
    container's /usr; a copy of the host's /etc, with the host's enabled services dropped and
    docker/rabbitmq/postgresql/... masked, becomes its /etc; the bed's Docker socket is
    bind-mounted at /run/docker.sock (group docker);
  * systemd boots as PID 1 (`mount --make-rshared /` first: docker makes / private, and
    systemd in a container keeps what it was given, which breaks LoadCredential=);
  * the user sluice comes from the shipped sysusers file at boot; the RabbitMQ password is a
    root-only file passed with LoadCredential= in a drop-in, the only addition to the shipped
    unit (installed byte for byte by `make install`).
"""

import grp
import io
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time

import pytest

import bed as bedmod
import sluicecfg

REPO = bedmod.REPO_ROOT
BUILDDIR = os.environ.get("SLUICE_BUILDDIR", REPO)
UNIT = os.path.join(REPO, "systemd", "sluiced.service")
IMAGE = "sluice-systemd:test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WAIT = 30.0

# Host services that must not start in the container (masked), besides every unit the host's
# /etc enables (its *.wants links are dropped).
MASK = ["docker.service", "docker.socket", "containerd.service", "rabbitmq-server.service",
        "postgresql.service", "epmd.service", "epmd.socket", "getty@tty1.service",
        "console-getty.service", "systemd-timesyncd.service", "apparmor.service",
        "e2scrub_reap.service"]

# Compiles src/main.c (the only user of SYSCONFDIR) with the make variables given on the
# command line, and links it against the tree's libsluice.a, exactly like the tree's own rule.
RELINK_MK = """
sluice-test-relink:
\t$(COMPILE) -c -o $(SLUICE_OUT)/main.o $(srcdir)/src/main.c
\t$(CCLD) $(AM_CFLAGS) $(CFLAGS) $(AM_LDFLAGS) $(LDFLAGS) -o $(SLUICE_OUT)/sluiced \
$(SLUICE_OUT)/main.o $(src_sluiced_LDADD) $(LIBS)
"""


def _unavailable(msg):
    if IN_CI:
        pytest.fail("systemd test bed unavailable (CI=true makes this a failure): " + msg,
                    pytrace=False)
    pytest.skip("systemd test bed unavailable: " + msg)


def _run(args, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run(args, capture_output=True, text=True, **kw)


def _image_tar():
    """A merged-/usr skeleton: /usr and /etc come from bind mounts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("etc", "usr", "tmp", "proc", "sys", "dev", "run", "var", "var/tmp", "var/log",
                  "var/lib", "root", "home", "srv", "mnt", "opt", "media"):
            bedmod._tar_add_dir(tf, d, 0o1777 if d in ("tmp", "var/tmp") else 0o755)
        for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                             ("lib64", "usr/lib64")):
            bedmod._tar_add_link(tf, name, target)
    return buf.getvalue()


def _demux(data):
    out, err, i = [], [], 0
    while i + 8 <= len(data):
        kind = data[i]
        n = struct.unpack(">I", data[i + 4:i + 8])[0]
        (err if kind == 2 else out).append(data[i + 8:i + 8 + n])
        i += 8 + n
    return b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


class Exec:
    def __init__(self, cmd, rc, out, err):
        self.cmd, self.rc, self.out, self.err = cmd, rc, out, err

    def __repr__(self):
        return "exec %r: rc %s\nstdout: %s\nstderr: %s" % (self.cmd, self.rc, self.out[-3000:],
                                                          self.err[-3000:])


class SystemdBox:
    """A systemd container on the bed's dockerd with sluice installed; see the module doc."""

    def __init__(self, bed):
        self.bed = bed
        self.dk = bed.dk
        self.tag = "%d-%s" % (os.getpid(), secrets.token_hex(2))
        self.pool = "sd-%s" % self.tag
        self.queue = "sd-%s" % self.tag
        self.cid = None
        self.tmpdir = None
        self.unified_docker = "/sys/fs/cgroup/unified/docker"

    # -- setup -----------------------------------------------------------------------------
    def start(self):
        if not os.path.exists("/lib/systemd/systemd"):
            _unavailable("/lib/systemd/systemd missing (apt-get install systemd)")
        self.tmpdir = tempfile.mkdtemp(prefix="sluice-systemd.")
        os.chmod(self.tmpdir, 0o755)
        self.results_dir = os.path.join(self.tmpdir, "results")
        os.makedirs(os.path.join(self.results_dir, "started"))
        self.stage = os.path.join(self.tmpdir, "stage")
        self.etc = os.path.join(self.tmpdir, "etc")
        self.usr = os.path.join(self.tmpdir, "usr")
        self._install()
        self._make_etc()
        self._write_sluice_config()
        os.mkdir(self.usr)
        r = _run(["mount", "-t", "overlay", "overlay", "-o",
                  "lowerdir=%s:/usr" % os.path.join(self.stage, "usr"), self.usr])
        assert r.returncode == 0, ("overlay mount of the staged /usr", r)
        self.dk.import_image(IMAGE, _image_tar())
        # the backlog goes in first: the management API's counts lag by up to 5 s
        self.bed.declare_queue(self.queue)
        self.bed.publish(self.queue, 2, duration=60)
        self._boot()

    def _install(self):
        r = _run(["make", "-s", "-C", BUILDDIR, "install", "DESTDIR=" + self.stage,
                  "prefix=/usr", "exec_prefix=/usr", "sysconfdir=/etc",
                  "systemdsystemunitdir=/usr/lib/systemd/system",
                  "sysusersdir=/usr/lib/sysusers.d"], timeout=300)
        assert r.returncode == 0, ("make install", r)
        obj = os.path.join(self.tmpdir, "obj")
        os.mkdir(obj)
        mk = os.path.join(self.tmpdir, "relink.mk")
        with open(mk, "w") as f:
            f.write(RELINK_MK)
        r = _run(["make", "-s", "-C", BUILDDIR, "-f", "Makefile", "-f", mk, "sluice-test-relink",
                  "prefix=/usr", "exec_prefix=/usr", "sysconfdir=/etc", "SLUICE_OUT=" + obj])
        assert r.returncode == 0, ("compile main.c with sysconfdir=/etc", r)
        sbin = os.path.join(self.stage, "usr", "sbin", "sluiced")
        shutil.copy(os.path.join(obj, "sluiced"), sbin)
        r = _run([sbin, "--help"])
        assert "default /etc/sluice/sluice.conf" in r.stdout, r
        for p in ("usr/sbin/sluiced", "usr/bin/sluicectl", "usr/lib/systemd/system/sluiced.service",
                  "usr/lib/sysusers.d/sluice.conf", "etc/sluice/sluice.conf"):
            assert os.path.exists(os.path.join(self.stage, p)), "make install did not install " + p
        with open(os.path.join(self.stage, "usr/lib/systemd/system/sluiced.service")) as f, \
                open(UNIT) as g:
            assert f.read() == g.read(), "the installed unit is not systemd/sluiced.service"

    def _make_etc(self):
        r = _run(["cp", "-a", "/etc", self.etc])
        assert r.returncode == 0, ("copy /etc", r)
        system = os.path.join(self.etc, "systemd", "system")
        for name in os.listdir(system):
            path = os.path.join(system, name)
            if name.endswith(".wants") and os.path.isdir(path) and not os.path.islink(path):
                for w in os.listdir(path):
                    os.unlink(os.path.join(path, w))
            elif name.startswith("sluiced.service"):  # a host-side install must not shadow ours
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        for unit in MASK:
            p = os.path.join(system, unit)
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink("/dev/null", p)
        dt = os.path.join(system, "default.target")
        if os.path.lexists(dt):
            os.unlink(dt)
        os.symlink("/lib/systemd/system/multi-user.target", dt)
        with open(os.path.join(self.etc, "fstab"), "w") as f:
            f.write("# empty: the container's mounts come from docker\n")
        # what `make install` put under /etc, as a package would
        shutil.rmtree(os.path.join(self.etc, "sluice"), ignore_errors=True)
        shutil.copytree(os.path.join(self.stage, "etc", "sluice"), os.path.join(self.etc, "sluice"))
        # the Docker socket is group docker (the private test socket: ours to chgrp)
        gid = None
        with open(os.path.join(self.etc, "group")) as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == "docker":
                    gid = int(parts[2])
        if gid is None:
            used = {g.gr_gid for g in grp.getgrall()}
            gid = next(g for g in range(990, 900, -1) if g not in used)
            with open(os.path.join(self.etc, "group"), "a") as f:
                f.write("docker:x:%d:\n" % gid)
        os.chown(self.bed.docker_socket, 0, gid)
        os.chmod(self.bed.docker_socket, 0o660)

    def config_text(self):
        pool = sluicecfg.pool_conf(self.bed, self.pool, self.queue, self.results_dir, target=1,
                                   min=0, max=1, cooldown=120, down=(120, 1, 1), stop_timeout=5)
        # no password and no password_file: sluiced reads $CREDENTIALS_DIRECTORY
        return """interval = 0.5;
docker: { socket = "/run/docker.sock"; };
rabbitmq: { url = "%s"; user = "%s"; amqp_url = "amqp://127.0.0.1:%d/"; timeout = 2.0; };
pools = (
  %s
);
""" % (self.bed.mgmt_url, self.bed.user, self.bed.amqp_port, pool)

    def write_etc(self, rel, text, mode):
        path = os.path.join(self.etc, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def _write_sluice_config(self):
        # 0640; group sluice once the user exists (created at boot from the sysusers file)
        self.write_etc("sluice/sluice.conf", self.config_text(), 0o640)
        # root-only: sluiced (user sluice) can read it only as a systemd credential
        self.write_etc("sluice/rabbitmq.password", self.bed.password + "\n", 0o600)
        self.write_etc("systemd/system/sluiced.service.d/credential.conf",
                       "[Service]\nLoadCredential=rabbitmq-password:"
                       "/etc/sluice/rabbitmq.password\n", 0o644)

    def _boot(self):
        body = {
            "Image": IMAGE,
            "Cmd": ["/bin/sh", "-c", "mount --make-rshared / && exec /lib/systemd/systemd"],
            "Env": ["container=docker"],
            "StopSignal": "SIGRTMIN+3",
            "Labels": {"io.sluice.test": "systemd-" + self.tag},
            "HostConfig": {
                "NetworkMode": "host",
                "CapAdd": ["ALL"],
                "CapDrop": ["SYS_RESOURCE"],
                "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
                "Binds": [self.usr + ":/usr:ro", self.etc + ":/etc",
                          self.bed.docker_socket + ":/run/docker.sock",
                          "/sys/fs/cgroup:/sys/fs/cgroup:rw"],
                "Tmpfs": {"/run": "", "/run/lock": "", "/tmp": ""},
                "RestartPolicy": {"Name": "no"},
            },
        }
        self.cid = self.bed.run_container(body, name="sluice-systemd-" + self.tag)
        t0 = time.monotonic()
        last = {}

        def booted():
            c = self.bed.inspect(self.cid)
            if not c or not c["State"]["Running"]:
                raise AssertionError("the systemd container exited: %s\n%s" % (
                    c and c["State"], self.bed.container_logs(self.cid)))
            r = self.sh("systemctl is-system-running")
            last["r"] = r
            return r.out.strip() in ("running", "degraded")

        try:
            ok = bedmod.wait_for(booted, timeout=WAIT, interval=0.3)
        except AssertionError as e:
            pytest.fail(str(e), pytrace=False)
        if not ok:
            pytest.fail("systemd did not boot within %.0f s: %r\n%s" % (
                WAIT, last.get("r"), self.sh("journalctl -b --no-pager | tail -n 60").out),
                pytrace=False)
        bedmod.log("systemd booted in %.1f s (%s)" % (time.monotonic() - t0,
                                                     last["r"].out.strip()))
        if last["r"].out.strip() == "degraded":
            bedmod.log(self.sh("systemctl --failed --no-pager").out)

    # -- use -------------------------------------------------------------------------------
    def exec(self, cmd, timeout=60.0):
        st, r = self.dk("POST", "/containers/%s/exec" % self.cid, {
            "Cmd": cmd, "AttachStdout": True, "AttachStderr": True,
            "Env": ["SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C"]})
        assert st == 201, ("exec create", st, r)
        st, data = self.dk.raw("POST", "/exec/%s/start" % r["Id"], {"Detach": False, "Tty": False},
                               timeout=timeout)
        assert st == 200, ("exec start", st, data[:500])
        out, err = _demux(data)
        st, info = self.dk("GET", "/exec/%s/json" % r["Id"])
        return Exec(cmd, info.get("ExitCode") if st == 200 else None, out, err)

    def sh(self, script, timeout=60.0):
        return self.exec(["/bin/sh", "-c", script], timeout=timeout)

    def ok(self, script, timeout=60.0):
        r = self.sh(script, timeout)
        assert r.rc == 0, r
        return r.out

    def show(self, *props):
        out = self.ok("systemctl show sluiced -p %s" % ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self):
        return self.ok("journalctl -u sluiced --no-pager -o cat")

    def pool_containers(self):
        return self.bed.containers(["io.sluice.pool=" + self.pool])

    # -- teardown --------------------------------------------------------------------------
    def teardown(self):
        if self.cid:
            self.dk.remove(self.cid)
        try:
            for c in self.pool_containers():
                self.dk.remove(c["Id"])
            self.bed.delete_queue(self.queue)
        except Exception as e:  # noqa: BLE001 - teardown goes on
            bedmod.log("systemd teardown: %r" % e)
        if self.tmpdir:
            bedmod.remove_tree(self.tmpdir)  # unmounts the /usr overlay first
        # systemd (hybrid cgroups) made docker/<id>/... in the unified hierarchy: make sure no
        # empty cgroup of ours is left there (runc normally removes it)
        if self.cid:
            mine = os.path.join(self.unified_docker, self.cid)
            for _ in range(20):
                if not os.path.isdir(mine):
                    break
                for root, dirs, _files in sorted(os.walk(mine), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(root)
                    except OSError:
                        pass
                time.sleep(0.25)
            if os.path.isdir(mine):
                bedmod.log("could not remove cgroup %s" % mine)


@pytest.fixture(scope="module")
def box(bed):
    b = SystemdBox(bed)
    try:
        b.start()
        yield b
    finally:
        b.teardown()


# -- tests --------------------------------------------------------------------------------
def test_unit_exposure_at_most_2():
    """SPEC "systemd": the unit is hardened, `systemd-analyze security` exposure at most 2.0
    (scored offline on systemd/sluiced.service as shipped)."""
    if not shutil.which("systemd-analyze"):
        _unavailable("systemd-analyze missing (apt-get install systemd)")
    r = _run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT])
    m = re.search(r"Overall exposure level for sluiced\.service: (\d+\.\d+)", r.stdout)
    assert m, r
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_runs_sluiced_under_systemd(bed, box):
    """SPEC "systemd" + "Security": with the unit, sysusers file and `make install` as shipped,
    under a real systemd: `systemctl enable --now sluiced` comes back active (Type=notify:
    READY=1 arrived) and journald has the "ready" line; the user sluice exists (created at
    boot from the shipped sysusers file) and sluiced runs as it, with group docker; the
    RabbitMQ password comes from a root-only file through LoadCredential=; under the
    hardening (ProtectSystem=strict, IPAddressDeny=any + IPAddressAllow=localhost, ...) it
    reads the queue on the loopback broker and creates a worker through the Docker socket;
    the structured journal fields are there and the password is in no log line; `sluicectl
    status` shows the pool; `systemctl reload` keeps it active and logs "configuration
    reloaded"; `systemctl stop` stops it and leaves the worker running."""
    pw = box.ok("getent passwd sluice").strip().split(":")
    assert pw[0] == "sluice" and pw[5:] == ["/nonexistent", "/usr/sbin/nologin"], pw
    box.ok("chgrp sluice /etc/sluice/sluice.conf && ls -ln /etc/sluice")

    r = box.sh("systemctl enable --now sluiced")
    assert r.rc == 0, (r, box.sh("journalctl -u sluiced --no-pager | tail -n 30").out)
    assert box.sh("systemctl is-enabled sluiced").out.strip() == "enabled"
    assert box.sh("systemctl is-active sluiced").out.strip() == "active"
    s = box.show("MainPID", "NRestarts", "Type", "User", "StatusText")
    assert s["Type"] == "notify" and s["User"] == "sluice" and s["NRestarts"] == "0", s
    pid = int(s["MainPID"])
    assert pid > 0, s
    assert re.search(r"^sluiced \S+ ready: 1 pool", box.journal(), re.M), box.journal()

    # the process: user sluice, supplementary group docker, no capabilities, no new privs
    status = box.ok("cat /proc/%d/status" % pid)
    assert box.ok("ps -o user= -p %d" % pid).strip() == "sluice"
    uid = int(pw[2])
    docker_gid = int(box.ok("getent group docker").split(":")[2])
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [str(uid)] * 4, fields["Uid"]
    assert str(docker_gid) in fields["Groups"].split(), fields["Groups"]
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, fields
    assert fields["NoNewPrivs"].strip() == "1", fields["NoNewPrivs"]
    assert box.sh("runuser -u sluice -- cat /etc/sluice/rabbitmq.password").rc != 0

    # the backlog (published before boot) makes it create a worker through the socket
    def worker():
        cs = box.pool_containers()
        return cs if [c for c in cs if c["State"] == "running"] else None
    cs = bedmod.wait_for(worker, timeout=WAIT)
    assert cs and len(cs) == 1, (cs, box.journal()[-3000:])
    assert cs[0]["Labels"].get("io.sluice.managed") == "true", cs[0]["Labels"]
    wid = cs[0]["Id"]

    journal = box.journal()
    assert re.search(r"^%s: scale up 0 -> 1 " % re.escape(box.pool), journal, re.M), journal
    assert bed.password not in journal
    entries = [json.loads(line) for line in
               box.ok("journalctl -u sluiced --no-pager -o json").splitlines()]
    up = [e for e in entries if e.get("SLUICE_POOL") == box.pool
          and "scale up" in str(e.get("MESSAGE"))]
    assert up and up[0].get("SLUICE_DESIRED") == "1" and up[0].get("SLUICE_ACTION"), (
        [e for e in entries if "scale up" in str(e.get("MESSAGE"))])
    assert not [e for e in entries if bed.password in json.dumps(e)]

    out = box.ok("sluicectl status")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [box.pool]]
    assert len(rows) == 1 and "0/1" in rows[0], out

    before = len(re.findall(r"^configuration reloaded", box.journal(), re.M))
    r = box.sh("systemctl reload sluiced")
    assert r.rc == 0, r
    assert box.sh("systemctl is-active sluiced").out.strip() == "active"
    assert bedmod.wait_for(lambda: len(re.findall(r"^configuration reloaded", box.journal(),
                                                  re.M)) > before, timeout=10), box.journal()
    assert box.show("MainPID")["MainPID"] == str(pid)

    r = box.sh("systemctl stop sluiced")
    assert r.rc == 0, r
    s = box.show("ActiveState", "Result", "ExecMainStatus")
    assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, s
    time.sleep(1.0)  # give a wrongly sent stop a chance to show
    c = bed.inspect(wid)
    assert c and c["State"]["Running"], c and c["State"]
    assert [x["Id"] for x in box.pool_containers()] == [wid]


def test_bad_config_fails_without_restart_loop(box):
    """The unit's promise (RestartPreventExitStatus=78, SPEC "Command line": 78 = bad config):
    with a bad /etc/sluice/sluice.conf, `systemctl start sluiced` fails, the journal names
    FILE:LINE, and systemd does not restart it (no restart 2 s later: a bad configuration
    must not restart in a loop)."""
    good = box.config_text()
    bad = good.replace("interval = 0.5;", "interval = 0.5; bogus_key = 1;")
    assert bad != good
    box.ok("systemctl stop sluiced && systemctl reset-failed sluiced || true")
    box.write_etc("sluice/sluice.conf", bad, 0o640)
    try:
        box.ok("chgrp sluice /etc/sluice/sluice.conf")
        r = box.sh("systemctl start sluiced")
        assert r.rc != 0, r
        assert re.search(r"^/etc/sluice/sluice\.conf:1: .*bogus_key", box.journal(), re.M), (
            box.journal()[-2000:])
        time.sleep(3.0)  # RestartSec=2s: a restart would have happened by now
        s = box.show("ActiveState", "Result", "NRestarts", "ExecMainStatus")
        assert s["NRestarts"] == "0" and s["ActiveState"] == "failed", s
        assert s["Result"] == "exit-code" and s["ExecMainStatus"] == "78", s
    finally:
        box.write_etc("sluice/sluice.conf", good, 0o640)
        box.sh("chgrp sluice /etc/sluice/sluice.conf; systemctl reset-failed sluiced")
