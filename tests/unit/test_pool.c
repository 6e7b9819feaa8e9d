/* SPDX-License-Identifier: MIT */
/* Reconcile plan: which containers sluice creates, drains, removes or leaves alone. Pure, so
 * every case is a table of containers as Docker lists them. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "pool.h"

#define NOW 1000000.0
#define SPEC "0123456789abcdef"

static PoolConfig pool_cfg(void)
{
	PoolConfig p = {0};
	p.name = (char *)"celery";
	p.min = 0;
	p.max = 10;
	p.stop_timeout = 30;
	p.stop_signal = (char *)"SIGTERM";
	memcpy(p.spec_hash, SPEC, 17);
	return p;
}

/* A container as docker_list() returns it. */
static DockerContainer ctr(const char *id, const char *name, const char *pool, bool managed,
			   const char *spec, const char *state, double age)
{
	DockerContainer c = {0};
	c.id = (char *)id;
	c.name = (char *)name;
	c.pool = (char *)pool;
	c.managed = managed;
	c.spec = (char *)spec;
	c.state = (char *)state;
	c.created = (int64_t)(NOW - age);
	c.exit_code = strcmp(state, "exited") == 0 ? 0 : -1;
	return c;
}

static size_t count_kind(const Plan *p, ActionKind k)
{
	size_t n = 0;
	for (size_t i = 0; i < p->n; i++)
		n += p->actions[i].kind == k;
	return n;
}

static const Action *find_action(const Plan *p, ActionKind k)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->actions[i].kind == k)
			return &p->actions[i];
	return NULL;
}

static void run(const DockerContainer *list, size_t n, int desired, bool backoff, PoolView *v,
		Plan *plan)
{
	PoolConfig p = pool_cfg();
	assert_int_equal(pool_observe(&p, list, n, NULL, 0, NULL, 0, NULL, 0, NOW, v), 0);
	assert_int_equal(pool_plan(&p, v, desired, backoff, NOW, plan), 0);
}

/* Promise: names encode pool, slot and drain start, and parse back exactly (state lives in
 * Docker, not in sluiced). */
static void test_names_round_trip(void **state)
{
	char buf[128];
	unsigned idx;
	bool draining;
	double since;

	pool_container_name(buf, sizeof buf, "celery", 3);
	assert_string_equal(buf, "sluice-celery-3");
	assert_int_equal(pool_parse_name(buf, "celery", &idx, &draining, &since), 0);
	assert_int_equal(idx, 3);
	assert_false(draining);

	pool_draining_name(buf, sizeof buf, "celery", 7, 1733346000.5);
	assert_string_equal(buf, "sluice-celery-7-draining-1733346000");
	assert_int_equal(pool_parse_name(buf, "celery", &idx, &draining, &since), 0);
	assert_int_equal(idx, 7);
	assert_true(draining);
	assert_true(since == 1733346000.0);

	static const char *const bad[] = {"sluice-celery", "sluice-celery-", "sluice-celeryx-1",
					  "sluice-other-1", "celery-1", "sluice-celery-1x",
					  "sluice-celery--1", "sluice-celery-1-draining-",
					  "sluice-celery-1-drain-5"};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_int_equal(pool_parse_name(bad[i], "celery", &idx, &draining, &since),
				 -EINVAL);
	/* A pool whose name extends another's does not claim its containers. */
	assert_int_equal(pool_parse_name("sluice-celery-2-1", "celery", &idx, &draining, &since),
			 -EINVAL);
	assert_int_equal(pool_parse_name("sluice-celery-2-1", "celery-2", &idx, &draining, &since),
			 0);
	assert_int_equal(idx, 1);
}

/* Promise: containers sluice does not own are invisible to the plan, whatever they look like:
 * same name pattern, only some labels, another pool's label, managed=false. */
static void test_never_touches_foreign_containers(void **state)
{
	DockerContainer list[] = {
		ctr("a1", "sluice-celery-1", "celery", false, SPEC, "running", 100),  /* managed=false */
		ctr("a2", "sluice-celery-2", NULL, true, SPEC, "running", 100),       /* no pool label */
		ctr("a3", "sluice-celery-3", "other", true, SPEC, "running", 100),    /* other pool */
		ctr("a4", "sluice-celery-4", "celery", false, SPEC, "exited", 100),   /* exited, not ours */
		ctr("a5", "worker", "Celery", true, SPEC, "running", 100),            /* case differs */
	};
	PoolView v;
	Plan plan;
	run(list, ELEMENTSOF(list), 0, false, &v, &plan);
	assert_int_equal(v.n, 0);
	assert_int_equal(plan.n, 0);
	for (size_t i = 0; i < plan.n; i++)
		assert_null(plan.actions[i].id);
	plan_free(&plan);
	pool_view_free(&v);

	/* Scaling up next to them creates new slots and still touches none of them. */
	run(list, ELEMENTSOF(list), 2, false, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 2);
	assert_int_equal(plan.n, 2);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: scale-up creates exactly desired - capacity workers in the lowest free slots. */
static void test_scale_up_fills_lowest_free_slots(void **state)
{
	DockerContainer list[] = {
		ctr("b1", "sluice-celery-1", "celery", true, SPEC, "running", 100),
		ctr("b3", "sluice-celery-3", "celery", true, SPEC, "running", 100),
		ctr("b4", "sluice-celery-4-draining-999990", "celery", true, SPEC, "running", 100),
	};
	PoolView v;
	Plan plan;
	run(list, ELEMENTSOF(list), 5, false, &v, &plan);
	assert_int_equal(v.running, 2);
	assert_int_equal(v.draining, 1);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 3);
	/* Slots 2, 5, 6: 4 is still held by the draining worker. */
	unsigned want[] = {2, 5, 6};
	size_t k = 0;
	for (size_t i = 0; i < plan.n; i++)
		if (plan.actions[i].kind == ACTION_CREATE) {
			assert_int_equal(plan.actions[i].index, want[k]);
			char name[64];
			snprintf(name, sizeof name, "sluice-celery-%u", want[k]);
			assert_string_equal(plan.actions[i].name, name);
			k++;
		}
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: a draining worker is never capacity and never stopped twice. */
static void test_draining_not_capacity_nor_victim(void **state)
{
	DockerContainer list[] = {
		ctr("c1", "sluice-celery-1", "celery", true, SPEC, "running", 100),
		ctr("c2", "sluice-celery-2-draining-999995", "celery", true, SPEC, "running", 100),
	};
	PoolView v;
	Plan plan;
	run(list, ELEMENTSOF(list), 0, false, &v, &plan);
	assert_int_equal(v.running + v.starting, 1);
	assert_int_equal(count_kind(&plan, ACTION_DRAIN), 1);
	assert_string_equal(find_action(&plan, ACTION_DRAIN)->id, "c1");
	assert_int_equal(count_kind(&plan, ACTION_RESTOP), 0);
	plan_free(&plan);
	pool_view_free(&v);

	/* Desired 1 with one running: nothing at all happens to the draining one. */
	run(list, ELEMENTSOF(list), 1, false, &v, &plan);
	assert_int_equal(plan.n, 0);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: an operation in flight on a container excludes it from new actions. */
static void test_busy_excluded(void **state)
{
	DockerContainer list[] = {
		ctr("d1", "sluice-celery-1", "celery", true, SPEC, "running", 100),
		ctr("d2", "sluice-celery-2", "celery", true, SPEC, "running", 50),
	};
	PoolConfig p = pool_cfg();
	char *busy[] = {(char *)"d2"};
	char *draining[] = {(char *)"d2"};
	PoolView v;
	Plan plan;
	assert_int_equal(pool_observe(&p, list, 2, NULL, 0, busy, 1, draining, 1, NOW, &v), 0);
	assert_int_equal(v.draining, 1);
	assert_int_equal(pool_plan(&p, &v, 0, false, NOW, &plan), 0);
	assert_int_equal(count_kind(&plan, ACTION_DRAIN), 1);
	assert_string_equal(find_action(&plan, ACTION_DRAIN)->id, "d1");
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: the victim is the one most likely idle: never started, then starting, then
 * outdated, then newest. */
static void test_victim_order(void **state)
{
	const struct {
		const char *what;
		DockerContainer list[3];
		const char *victim;
		ActionKind kind;
	} cases[] = {
		{"never started goes first, removed not drained",
		 {ctr("e1", "sluice-celery-1", "celery", true, SPEC, "running", 10),
		  ctr("e2", "sluice-celery-2", "celery", true, SPEC, "created", 200),
		  ctr("e3", "sluice-celery-3", "celery", true, SPEC, "running", 100)},
		 "e2",
		 ACTION_REMOVE},
		{"warming up before running",
		 {ctr("e1", "sluice-celery-1", "celery", true, SPEC, "running", 100),
		  ctr("e2", "sluice-celery-2", "celery", true, SPEC, "running", 1),
		  ctr("e3", "sluice-celery-3", "celery", true, SPEC, "running", 50)},
		 "e2",
		 ACTION_DRAIN},
		{"outdated before fresh",
		 {ctr("e1", "sluice-celery-1", "celery", true, "ffffffffffffffff", "running", 100),
		  ctr("e2", "sluice-celery-2", "celery", true, SPEC, "running", 20),
		  ctr("e3", "sluice-celery-3", "celery", true, SPEC, "running", 50)},
		 "e1",
		 ACTION_DRAIN},
		{"newest among equals",
		 {ctr("e1", "sluice-celery-1", "celery", true, SPEC, "running", 100),
		  ctr("e2", "sluice-celery-2", "celery", true, SPEC, "running", 20),
		  ctr("e3", "sluice-celery-3", "celery", true, SPEC, "running", 50)},
		 "e2",
		 ACTION_DRAIN},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		PoolView v;
		Plan plan;
		print_message("case: %s\n", cases[i].what);
		/* Outdated present: allowance is desired+1, so ask for 1 to force one victim. */
		int desired = strcmp(cases[i].what, "outdated before fresh") == 0 ? 1 : 2;
		run(cases[i].list, 3, desired, false, &v, &plan);
		const Action *a = NULL;
		for (size_t j = 0; j < plan.n; j++)
			if (plan.actions[j].kind == ACTION_DRAIN ||
			    (plan.actions[j].kind == ACTION_REMOVE && plan.actions[j].id))
				a = a ? a : &plan.actions[j];
		assert_non_null(a);
		assert_string_equal(a->id, cases[i].victim);
		assert_int_equal(a->kind, cases[i].kind);
		plan_free(&plan);
		pool_view_free(&v);
	}
}

/* Promise: exited workers are removed; one that was not drained is a crash, "early" when it
 * died within the crash window; during back-off no worker is created. */
static void test_exited_removed_and_backoff(void **state)
{
	DockerContainer list[] = {
		ctr("f1", "sluice-celery-1", "celery", true, SPEC, "exited", 5),
		ctr("f2", "sluice-celery-2-draining-999000", "celery", true, SPEC, "exited", 900),
		ctr("f3", "sluice-celery-3", "celery", true, SPEC, "exited", 600),
	};
	PoolView v;
	Plan plan;
	run(list, ELEMENTSOF(list), 2, true, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_REMOVE), 3);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 0);
	assert_true(plan.backoff);
	for (size_t i = 0; i < plan.n; i++) {
		const Action *a = &plan.actions[i];
		if (strcmp(a->id, "f1") == 0) {
			assert_true(a->crashed);
			assert_true(a->early);
		} else if (strcmp(a->id, "f2") == 0)
			assert_false(a->crashed);
		else {
			assert_true(a->crashed);
			assert_false(a->early);
		}
	}
	plan_free(&plan);
	pool_view_free(&v);

	run(list, ELEMENTSOF(list), 2, false, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 2);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: back-off doubles from 2 s and is capped at 300 s. */
static void test_backoff_delay(void **state)
{
	assert_true(pool_backoff_delay(0) == 0);
	assert_true(pool_backoff_delay(1) == 2);
	assert_true(pool_backoff_delay(2) == 4);
	assert_true(pool_backoff_delay(5) == 32);
	assert_true(pool_backoff_delay(9) == 300);
	assert_true(pool_backoff_delay(1000) == 300);
}

/* Promise: a spec change rolls one worker at a time, new one up first, then an old one
 * drained; never more than desired + 1. */
static void test_rolling_update(void **state)
{
	const char *old = "ffffffffffffffff";
	/* Step 1: all outdated, nothing starting -> one fresh created, nobody drained. */
	DockerContainer s1[] = {
		ctr("g1", "sluice-celery-1", "celery", true, old, "running", 100),
		ctr("g2", "sluice-celery-2", "celery", true, old, "running", 100),
	};
	PoolView v;
	Plan plan;
	run(s1, 2, 2, false, &v, &plan);
	assert_true(plan.rolling);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 1);
	assert_int_equal(count_kind(&plan, ACTION_DRAIN), 0);
	plan_free(&plan);
	pool_view_free(&v);

	/* Step 2: the fresh one is still starting -> wait. */
	DockerContainer s2[] = {
		s1[0], s1[1], ctr("g3", "sluice-celery-3", "celery", true, SPEC, "running", 1),
	};
	run(s2, 3, 2, false, &v, &plan);
	assert_int_equal(plan.n, 0);
	plan_free(&plan);
	pool_view_free(&v);

	/* Step 3: the fresh one runs -> one outdated drained, nothing created. */
	s2[2].created = (int64_t)(NOW - 30);
	run(s2, 3, 2, false, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 0);
	assert_int_equal(count_kind(&plan, ACTION_DRAIN), 1);
	const char *victim = find_action(&plan, ACTION_DRAIN)->id;
	assert_true(strcmp(victim, "g1") == 0 || strcmp(victim, "g2") == 0);
	plan_free(&plan);
	pool_view_free(&v);

	/* In back-off, the roll-out does not create either. */
	run(s1, 2, 2, true, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 0);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: a create in flight counts as capacity (no duplicate creates), and its slot is
 * taken. */
static void test_pending_create_counts(void **state)
{
	PoolConfig p = pool_cfg();
	PendingCreate pend[] = {{"sluice-celery-1", 1}};
	PoolView v;
	Plan plan;
	assert_int_equal(pool_observe(&p, NULL, 0, pend, 1, NULL, 0, NULL, 0, NOW, &v), 0);
	assert_int_equal(v.starting, 1);
	assert_int_equal(pool_plan(&p, &v, 2, false, NOW, &plan), 0);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 1);
	assert_int_equal(plan.actions[0].index, 2);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: recovery after a crash of sluiced: a created-never-started worker is started; a
 * draining worker whose stop never came is stopped again, only after its grace + margin. */
static void test_crash_recovery(void **state)
{
	DockerContainer list[] = {
		ctr("h1", "sluice-celery-1", "celery", true, SPEC, "created", 30),
		ctr("h2", "sluice-celery-2-draining-999900", "celery", true, SPEC, "running", 500),
		ctr("h3", "sluice-celery-3-draining-999990", "celery", true, SPEC, "running", 500),
	};
	PoolView v;
	Plan plan;
	run(list, 3, 1, false, &v, &plan);
	assert_int_equal(count_kind(&plan, ACTION_START), 1);
	assert_string_equal(find_action(&plan, ACTION_START)->id, "h1");
	/* h2 began draining 100 s ago > 30 s grace + 60 s margin; h3 only 10 s ago. */
	assert_int_equal(count_kind(&plan, ACTION_RESTOP), 1);
	assert_string_equal(find_action(&plan, ACTION_RESTOP)->id, "h2");
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 0);
	plan_free(&plan);
	pool_view_free(&v);
}

/* Promise: a slot whose name a foreign container holds is skipped, not retried every tick. */
static void test_reserved_slot_skipped(void **state)
{
	PoolConfig p = pool_cfg();
	PoolView v;
	Plan plan;
	unsigned reserved[] = {1, 3};
	assert_int_equal(pool_observe(&p, NULL, 0, NULL, 0, NULL, 0, NULL, 0, NOW, &v), 0);
	v.reserved = reserved;
	v.n_reserved = 2;
	assert_int_equal(pool_plan(&p, &v, 2, false, NOW, &plan), 0);
	assert_int_equal(count_kind(&plan, ACTION_CREATE), 2);
	assert_int_equal(plan.actions[0].index, 2);
	assert_int_equal(plan.actions[1].index, 4);
	plan_free(&plan);
	pool_view_free(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_never_touches_foreign_containers),
		cmocka_unit_test(test_scale_up_fills_lowest_free_slots),
		cmocka_unit_test(test_draining_not_capacity_nor_victim),
		cmocka_unit_test(test_busy_excluded),
		cmocka_unit_test(test_victim_order),
		cmocka_unit_test(test_exited_removed_and_backoff),
		cmocka_unit_test(test_backoff_delay),
		cmocka_unit_test(test_rolling_update),
		cmocka_unit_test(test_pending_create_counts),
		cmocka_unit_test(test_crash_recovery),
		cmocka_unit_test(test_reserved_slot_skipped),
	};
	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
