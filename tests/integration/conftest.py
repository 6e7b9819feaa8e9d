"""pytest fixtures for sluice's integration tests (the bed itself is in bed.py, no pytest).

Fixtures:
  bed      (session) a started bed.Bed: private dockerd + RabbitMQ + local images.
  q        (function) a QueueCtx: unique queue name, its own results dir, and cleanup of
           the containers and queue the test created.
  sluiced  (function) a factory: sluiced(config_text, extra_args=()) -> started Sluiced,
           closed (killed if still alive) at teardown.
  proxy    (function) a faultproxy.FaultProxy in front of the management API (mode "pass").
  repo_root, sluiced_binary, sluicectl_binary.

The CI=true rule: without CI=true a bed that cannot start (not root, a package missing, a
server that will not come up) skips the tests that need it; with CI=true it is an error.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bed as bedmod  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

REPO_ROOT = bedmod.REPO_ROOT
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(msg):
    if IN_CI:
        pytest.fail("test bed unavailable (CI=true makes this a failure): " + msg,
                    pytrace=False)
    pytest.skip("test bed unavailable: " + msg)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def bed():
    bedmod.install_signal_handlers()
    b = bedmod.Bed(log_dir=os.environ.get("SLUICE_TEST_LOGDIR"))
    try:
        try:
            b.start()
        except bedmod.BedError as e:
            _unavailable(str(e))
        yield b
    finally:
        b.stop()


class QueueCtx:
    """Per-test resources: a unique queue name (derived from the test name), a results dir,
    and the labels that mark the containers this test created (removed at teardown)."""

    def __init__(self, bed, name, tmpdir):
        self.bed = bed
        self.name = name
        self.tmpdir = tmpdir
        self.results_dir = os.path.join(tmpdir, "results")
        os.makedirs(os.path.join(self.results_dir, "started"), exist_ok=True)
        self.labels = {"io.sluice.test": name}
        self.queues = {name}

    def queue(self, suffix):
        """Another queue name owned by this test."""
        qn = "%s.%s" % (self.name, suffix)
        self.queues.add(qn)
        return qn

    def run_worker(self, name=None, queue=None, labels=None, extra_env=None, **kw):
        lab = dict(self.labels)
        lab.update(labels or {})
        name = name or "%s-w%d" % (self.name, len(self.containers()) + 1)
        return self.bed.run_worker(name, queue or self.name, self.results_dir, labels=lab,
                                   extra_env=extra_env, **kw)

    def publish(self, n, duration=0.0, queue=None, ids=None):
        return self.bed.publish(queue or self.name, n, duration=duration, ids=ids)

    def done(self):
        return bedmod.done_ids(self.results_dir)

    def started(self):
        return bedmod.started_ids(self.results_dir)

    def containers(self):
        return self.bed.containers(["io.sluice.test=" + self.name])

    def cleanup(self):
        for c in self.bed.containers(["io.sluice.test=" + self.name]):
            self.bed.dk.remove(c["Id"])
        for qn in self.queues:
            self.bed.delete_queue(qn)


def _safe_name(nodeid):
    base = nodeid.split("::")[-1]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-")[:60]
    return "%s-%d" % (base or "t", os.getpid())


@pytest.fixture
def q(bed, request):
    tmpdir = tempfile.mkdtemp(prefix="sluice-test.")
    ctx = QueueCtx(bed, _safe_name(request.node.nodeid), tmpdir)
    try:
        yield ctx
    finally:
        try:
            ctx.cleanup()
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="session")
def sluiced_binary():
    return bedmod.repo_binary("sluiced")


@pytest.fixture(scope="session")
def sluicectl_binary():
    return bedmod.repo_binary("sluicectl")


@pytest.fixture
def sluiced(sluiced_binary, tmp_path):
    """Factory: sluiced(config_text, extra_args=(), env=None) -> a started Sluiced."""
    started = []

    def make(config_text, extra_args=(), env=None, start=True):
        if not os.access(sluiced_binary, os.X_OK):
            pytest.fail("%s not built" % sluiced_binary)
        d = bedmod.Sluiced(sluiced_binary, config_text, str(tmp_path / ("d%d" % len(started))),
                           extra_args=extra_args, env=env)
        started.append(d)
        if start:
            d.start()
        return d

    try:
        yield make
    finally:
        for d in started:
            d.close()


def pytest_configure(config):
    # python3-celery 5.2 on Python 3.11: noise, not ours
    config.addinivalue_line("filterwarnings",
                            "ignore:SelectableGroups dict interface:DeprecationWarning")


@pytest.fixture
def proxy(bed):
    """A FaultProxy (faultproxy.py) in front of the bed's management API, in mode "pass"."""
    p = FaultProxy("127.0.0.1", bed.mgmt_port).start()
    try:
        yield p
    finally:
        p.stop()
