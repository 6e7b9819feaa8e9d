"""The AMQP source (source = "amqp"): depth by passive queue.declare over librabbitmq, on the
real broker. It counts ready messages only, without the management API's statistics lag.
"""

import os
import secrets

import bed as bedmod
from sluicecfg import config, pool_conf


def _live(bed, pool):
    return [c for c in bed.containers(["io.sluice.pool=" + pool])
            if c["State"] in ("created", "running") and "-draining-" not in c["Names"][0]]


def test_amqp_source_scales_up_and_down(bed, q, sluiced):
    """A pool reading its depth over AMQP scales up on a backlog in a queue it has never seen
    (no "no statistics yet" wait: a passive declare is current), completes every task, and
    goes back to zero; a queue missing on the broker reads as unknown and holds, never zero."""
    pool = "amqp-%d-%s" % (os.getpid(), secrets.token_hex(2))
    missing = "%s-missing" % pool
    text = config(bed, [
        pool_conf(bed, pool, q.name, q.results_dir, target=2, max=2, cooldown=1,
                  down=(1, 2, 0.5), stop_timeout=20, source="amqp", count="ready"),
        pool_conf(bed, pool + "-x", missing, q.results_dir, max=1, source="amqp",
                  count="ready"),
    ], q.tmpdir)
    bed.declare_queue(q.name)
    ids = q.publish(6, duration=0.5)
    d = sluiced(text)
    try:
        d.wait_notify("READY=1", timeout=20)
        # The first readings are valid at once: the AMQP count has no statistics window.
        st = bedmod.wait_for(lambda: [p for p in (d.status_json() or {}).get("pools", [])
                                      if p["name"] == pool and p["depth_valid"]],
                             timeout=10)
        assert st, d.log_text()[-2000:]
        assert bedmod.wait_for(lambda: len(_live(bed, pool)) == 2, timeout=30), \
            d.log_text()[-3000:]
        assert bedmod.wait_for(lambda: set(ids) <= q.done(), timeout=60), q.done()
        assert bedmod.wait_for(lambda: not bed.containers(["io.sluice.pool=" + pool]),
                               timeout=60), d.log_text()[-3000:]

        # The missing queue: unknown (absent), held at 0, never an error that kills the loop.
        px = [p for p in d.status_json()["pools"] if p["name"] == pool + "-x"][0]
        assert not px["depth_valid"] and px["guard"] == "error hold", px
        assert "absent" in (px.get("depth_error") or ""), px
        assert d.alive()
    finally:
        d.kill9()
        for p in (pool, pool + "-x"):
            for c in bed.containers(["io.sluice.pool=" + p]):
                bed.dk.remove(c["Id"])
