"""Docker Engine outage: sluiced holds, survives, and picks up again without duplicates.

SPEC "Behaviour": sluiced degrades gracefully at runtime; it keeps no state Docker cannot give
back, so when the Engine answers again it lists its containers and carries on. The outage is
injected in front of the real dockerd: sluiced talks to a Unix-socket relay (UnixRelay) that
forwards to the bed's socket and can be closed (connections refused: the socket is gone) and
opened again.
"""

import os
import secrets
import socket
import threading
import time

import pytest

import bed as bedmod
from sluicecfg import config, pool_conf


class UnixRelay:
    """A byte relay from a Unix socket PATH to the Unix socket UPSTREAM. close() removes the
    listening socket (new connections fail as if dockerd were gone) and cuts open relays;
    open() listens again."""

    def __init__(self, path, upstream):
        self.path = path
        self.upstream = upstream
        self.listener = None
        self.conns = []
        self.lock = threading.Lock()
        self.accepted = 0

    def open(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def close(self):
        s, self.listener = self.listener, None
        if s:
            s.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            try:
                u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                u.connect(self.upstream)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.accepted += 1
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def relay(bed, tmp_path):
    r = UnixRelay(str(tmp_path / "docker-relay.sock"), bed.docker_socket).open()
    try:
        yield r
    finally:
        r.close()


def _containers(bed, pool):
    return {c["Id"]: c["State"] for c in bed.containers(["io.sluice.pool=" + pool])}


def test_docker_outage_holds_then_resumes(bed, q, sluiced, relay):
    """While the Docker Engine is unreachable sluiced stays up, logs it once, and changes
    nothing; when it is back it adopts the same workers (no duplicates, never above max) and
    resumes scaling: the pool goes back to zero once the work is done."""
    pool = "outage-%d-%s" % (os.getpid(), secrets.token_hex(2))
    text = config(bed, [pool_conf(bed, pool, q.name, q.results_dir, target=1, max=2,
                                  cooldown=2, down=(1, 2, 0.5), stop_timeout=20,
                                  count="ready")], q.tmpdir)
    text = text.replace('socket = "%s";' % bed.docker_socket, 'socket = "%s";' % relay.path)
    assert relay.path in text
    bed.declare_queue(q.name)
    d = sluiced(text)
    try:
        d.wait_notify("READY=1", timeout=20)
        ids = q.publish(4, duration=6.0)
        assert bedmod.wait_for(lambda: list(_containers(bed, pool).values()).count("running")
                               == 2, timeout=40), d.log_text()[-3000:]
        before = _containers(bed, pool)

        relay.close()
        d.wait_log(r"Docker unavailable", timeout=15)
        time.sleep(3)  # several ticks without Docker
        assert d.alive()
        assert _containers(bed, pool) == before, "containers changed while Docker was away"
        assert d.log_text().count("Docker unavailable") == 1, "the outage is logged once"
        st = d.status_json()
        p = [x for x in st["pools"] if x["name"] == pool][0]
        assert p["guard"] == "error hold", p

        relay.open()
        d.wait_log(r"Docker is back", timeout=15)
        # Same workers adopted: nothing new while demand is unchanged, never above max.
        seen = set()
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            cs = _containers(bed, pool)
            seen.update(cs)
            live = [i for i, s in cs.items() if s in ("created", "running")]
            assert len(live) <= 2, cs
            time.sleep(0.25)
        assert not (seen - set(before)) or all(
            s == "exited" for i, s in _containers(bed, pool).items() if i not in before), \
            "a duplicate worker was created after Docker came back"

        # It acts again: all tasks done, the pool goes to zero.
        assert bedmod.wait_for(lambda: set(ids) <= q.done(), timeout=60), q.done()
        assert bedmod.wait_for(lambda: not _containers(bed, pool), timeout=60), \
            d.log_text()[-3000:]
    finally:
        d.kill9()
        for cid in _containers(bed, pool):
            bed.dk.remove(cid)
