"""Polling cost, measured from outside: what sluiced asks of the RabbitMQ management API.

Issue #3: depth is read "with as few requests per tick as the API allows (columns=, one
listing per vhost where several pools share it)". The requests are counted by a pass-through
proxy in front of the real management API (faultproxy.py in mode "pass").
"""

import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluicecfg  # noqa: E402


def _ticks(d):
    return sum(1 for m in d.messages() if m.startswith("STATUS="))


def test_one_listing_per_vhost_per_tick(bed, q, sluiced, proxy, tmp_path):
    """Two pools reading three queues of one vhost cost one management request per tick
    (not one per pool or per queue), and each tick makes two HTTP requests in all: that
    listing and one Docker container list."""
    qa, qb, qc = q.queue("a"), q.queue("b"), q.queue("c")
    for qn in (qa, qb, qc):
        bed.declare_queue(qn)
    res = str(tmp_path / "results")
    pools = [sluicecfg.pool_conf(bed, "req1-%d" % os.getpid(), qa, res, queues=[qa, qb], max=1),
             sluicecfg.pool_conf(bed, "req2-%d" % os.getpid(), qc, res, max=1)]
    text = sluicecfg.config(bed, pools, str(tmp_path), interval=0.5)
    text = text.replace('url = "%s";' % bed.mgmt_url, 'url = "%s";' % proxy.url)
    d = sluiced(text)
    d.wait_notify("READY=1", timeout=20)

    t0, c0 = _ticks(d), proxy.count()
    time.sleep(5)
    t1, c1 = _ticks(d), proxy.count()
    ticks, requests = t1 - t0, c1 - c0
    print("%d ticks, %d management requests" % (ticks, requests))
    assert ticks >= 5, "sluiced is not ticking: %d ticks in 5 s" % ticks
    # A tick in flight at either end may be counted on one side only.
    assert abs(requests - ticks) <= 1, "%d management requests for %d ticks" % (requests, ticks)
    assert proxy.count("pass") == proxy.count()

    st = d.status_json()
    assert st["requests_last_tick"] == 2, st["requests_last_tick"]
