"""Smoke tests: the bed is real (real dockerd, RabbitMQ, Celery) and can see a loss.

These do not run sluiced; they prove the ground the daemon's tests stand on.
"""

import time

import bed as bedmod


def _exit_code(bed, cid):
    c = bed.inspect(cid)
    return c["State"]["ExitCode"] if c else None


def test_worker_started_through_the_docker_socket_consumes_every_task(bed, q):
    bed.declare_queue(q.name)
    cid = q.run_worker()
    ids = q.publish(8, duration=0.05)
    ok = bedmod.wait_for(lambda: q.done() >= set(ids), timeout=40)
    assert ok, "recorded %d of %d; worker log:\n%s" % (
        len(q.done() & set(ids)), len(ids), bed.container_logs(cid)[-3000:])
    assert q.done() == set(ids)
    bed.wait_queue(q.name, ready=0, unacked=0, consumers=1, timeout=20)


def test_stop_with_grace_lets_the_running_task_finish_and_keeps_the_rest_queued(bed, q):
    duration, grace = 3.0, 20
    cid = q.run_worker()
    ids = q.publish(4, duration=duration)
    # the first task is running (its marker exists) and has not finished yet
    assert bedmod.wait_for(lambda: q.started(), timeout=40), bed.container_logs(cid)[-3000:]
    running = q.started()
    assert len(running) == 1 and not q.done()
    t0 = time.monotonic()
    assert bed.stop_container(cid, grace) == 204
    took = time.monotonic() - t0
    # warm shutdown: the running task completed, the worker exited by itself before the grace
    assert q.done() == running, "running %s, done %s" % (running, q.done())
    assert took < grace, "stop took %.1f s: the worker was killed, not drained" % took
    assert _exit_code(bed, cid) == 0, bed.container_logs(cid)[-3000:]
    # the rest are back to ready once the management API's statistics catch up
    bed.wait_queue(q.name, ready=len(ids) - 1, unacked=0, consumers=0, timeout=20)


def test_negative_control_worker_on_a_wrong_broker_port_records_nothing(bed, q):
    """If the worker cannot reach the broker, the same checks as above must see the failure."""
    bad = bedmod.free_port({bed.amqp_port, bed.mgmt_port})
    bad_url = "amqp://%s:%s@127.0.0.1:%d//" % (bed.user, bed.password, bad)
    bed.declare_queue(q.name)
    q.run_worker(broker_url=bad_url)
    ids = q.publish(3, duration=0.05)
    assert not bedmod.wait_for(lambda: q.done() & set(ids), timeout=10)
    assert not q.started()
    bed.wait_queue(q.name, ready=3, unacked=0, consumers=0, timeout=20)


def test_sigkill_mid_task_requeues_it_with_late_ack(bed, q):
    """acks_late + reject_on_worker_lost: a killed worker loses nothing (it is redelivered)."""
    cid = q.run_worker()
    ids = q.publish(3, duration=30)
    assert bedmod.wait_for(lambda: q.started(), timeout=40), bed.container_logs(cid)[-3000:]
    assert bed.docker("POST", "/containers/%s/kill?signal=SIGKILL" % cid)[0] == 204
    bed.wait_queue(q.name, ready=len(ids), unacked=0, consumers=0, timeout=20)
    assert not q.done()


def test_negative_control_sigkill_with_early_ack_loses_the_running_task(bed, q):
    """With early ack the same kill loses a task, and the bed sees it (ready == N - 1)."""
    cid = q.run_worker(extra_env=["SLUICE_TEST_EARLY_ACK=1"])
    ids = q.publish(3, duration=30)
    assert bedmod.wait_for(lambda: q.started(), timeout=40), bed.container_logs(cid)[-3000:]
    assert bed.docker("POST", "/containers/%s/kill?signal=SIGKILL" % cid)[0] == 204
    bed.wait_queue(q.name, ready=len(ids) - 1, unacked=0, consumers=0, timeout=20)
    assert not q.done()
