/* SPDX-License-Identifier: MIT */
/* The scaling policy, tested as the pure function it is: tables of single decisions, then
 * scenarios driven by a simulated clock. Each case names the KEDA/HPA behaviour it reproduces
 * (shared/reference/keda-hpa-semantics.md sections 2 and 4) or the one it deliberately
 * improves (section 9, SPEC "Decision" and "Unknown is never zero"). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "macro.h"
#include "policy.h"

#define TICK 5.0 /* sluice's default interval */

/* cmocka 1.1 compares floats only; times and ratios here need doubles. */
#define assert_near(a, b, eps)                                                                     \
	do {                                                                                       \
		double a_ = (a), b_ = (b);                                                         \
		if (!(fabs(a_ - b_) <= (eps)))                                                     \
			fail_msg("%s = %g, want %g", #a, a_, b_);                                  \
	} while (0)

typedef enum {
	PROFILE_DEFAULTS, /* SPEC example: up 0 s/4 per 15 s, down 300 s/1 per 60 s, cooldown 300 */
	PROFILE_FREE,     /* no windows, no step limits, no cooldown: the recommendation alone */
	PROFILE_COOL,     /* like FREE, but cooldown 300 */
} Profile;

static PoolConfig pool(Profile prof)
{
	PoolConfig p = {
	    .name = (char *)"celery",
	    .target = 10,
	    .activation = 0,
	    .min = 0,
	    .max = 10,
	    .cooldown = 300,
	    .up = {.stabilization = 0, .max_step = 4, .period = 15},
	    .down = {.stabilization = 300, .max_step = 1, .period = 60},
	    .on_error = ON_ERROR_HOLD,
	    .fallback = 0,
	    .failure_threshold = 3,
	};

	if (prof == PROFILE_FREE || prof == PROFILE_COOL) {
		p.up = (ScaleRule){.stabilization = 0, .max_step = 1000, .period = 15};
		p.down = (ScaleRule){.stabilization = 0, .max_step = 1000, .period = 15};
		p.cooldown = prof == PROFILE_COOL ? 300 : 0;
	}
	return p;
}

static Reading ok(double depth)
{
	return (Reading){.valid = true, .depth = depth};
}

static const Reading unknown = {.valid = false};

/* ---- single decisions ------------------------------------------------------------------ */

typedef struct {
	const char *why;
	Profile prof;
	double target, activation;
	int min, max;
	bool warm;         /* one decision at t = 0 first, with warm_depth and current */
	double warm_depth; /* (makes last_active = 0 when active) */
	double t;          /* time of the decision under test */
	bool valid;
	double depth;
	int current;
	int want_rec, want_desired;
	Guard want_guard;
} Case;

/* Columns: why, profile, target, activation, min, max, warm, warm_depth, t, valid, depth,
 * current, then the expected recommendation, desired and guard. */
static const Case cases[] = {
    /* HPA GetExternalPerPodMetricReplicas, AverageValue: ceil(total / target). */
    {"HPA AverageValue: 20 msgs / target 5 -> 4 (KEDA docs example)", PROFILE_FREE, 5, 0, 0, 100,
     false, 0, 0, true, 20, 1, 4, 4, GUARD_NONE},
    {"HPA AverageValue: ceil, 21 / 5 -> 5", PROFILE_FREE, 5, 0, 0, 100, false, 0, 0, true, 21, 1, 5,
     5, GUARD_NONE},
    {"HPA AverageValue: independent of current, 20 / 5 at 9 -> 4", PROFILE_FREE, 5, 0, 0, 100,
     false, 0, 0, true, 20, 9, 4, 4, GUARD_NONE},
    {"HPA AverageValue: fractional target, 1 msg / 0.5 -> 2", PROFILE_FREE, 0.5, 0, 0, 100, false,
     0, 0, true, 1, 1, 2, 2, GUARD_NONE},
    /* HPA tolerance 0.1, isWithin: (1 - tol) <= ratio <= (1 + tol). */
    {"HPA tolerance 0.1: ratio 1.05 -> no change", PROFILE_FREE, 10, 0, 0, 100, false, 0, 0, true,
     105, 10, 10, 10, GUARD_TOLERANCE},
    {"HPA tolerance 0.1: ratio 0.95 -> no change", PROFILE_FREE, 10, 0, 0, 100, false, 0, 0, true,
     190, 20, 20, 20, GUARD_TOLERANCE},
    {"HPA tolerance bounds inclusive: ratio 1.1 -> no change", PROFILE_FREE, 10, 0, 0, 100, false,
     0, 0, true, 11, 1, 1, 1, GUARD_TOLERANCE},
    {"HPA tolerance bounds inclusive: ratio 0.9 -> no change", PROFILE_FREE, 10, 0, 0, 100, false,
     0, 0, true, 90, 10, 10, 10, GUARD_TOLERANCE},
    {"HPA tolerance: ratio 1.11 is outside -> ceil(111/10) = 12", PROFILE_FREE, 10, 0, 0, 100,
     false, 0, 0, true, 111, 10, 12, 12, GUARD_NONE},
    {"HPA tolerance: ratio 0.89 is outside -> ceil(89/10) = 9", PROFILE_FREE, 10, 0, 0, 100, false,
     0, 0, true, 89, 10, 9, 9, GUARD_NONE},
    {"HPA tolerance: not applied at zero (ratio undefined), 1 msg wakes 0 -> 1", PROFILE_FREE, 10,
     0, 0, 100, false, 0, 0, true, 1, 0, 1, 1, GUARD_NONE},
    /* KEDA activation: IsActive = depth > activationValue, strict. */
    {"KEDA activation strict >: depth == activation stays at 0", PROFILE_FREE, 10, 5, 0, 100, false,
     0, 0, true, 5, 0, 0, 0, GUARD_ACTIVATION},
    {"KEDA activation strict >: depth activation+1 wakes 0 -> 1", PROFILE_FREE, 10, 5, 0, 100,
     false, 0, 0, true, 6, 0, 1, 1, GUARD_NONE},
    {"KEDA activationValue 0 default: empty queue at 0 stays 0, no guard needed", PROFILE_FREE, 10,
     0, 0, 100, false, 0, 0, true, 0, 0, 0, 0, GUARD_NONE},
    {"KEDA activation has priority: value 10, activation 50, 40 msgs -> stays 0", PROFILE_FREE, 10,
     50, 0, 100, false, 0, 0, true, 40, 0, 0, 0, GUARD_ACTIVATION},
    /* KEDA deactivation: inactive and lastActiveTime + cooldownPeriod < now (strict). */
    {"KEDA cooldownPeriod strict: at last_active + cooldown still held at 1", PROFILE_COOL, 10, 0,
     0, 100, true, 50, 300, true, 0, 3, 0, 1, GUARD_COOLDOWN},
    {"KEDA cooldownPeriod: past it, 3 -> 0 (no windows, no step limit here)", PROFILE_COOL, 10, 0,
     0, 100, true, 50, 301, true, 0, 3, 0, 0, GUARD_NONE},
    {"KEDA: inactive within cooldown, depth in (0, activation] sized by HPA", PROFILE_COOL, 10, 50,
     0, 100, true, 42, 300, true, 42, 4, 4, 4, GUARD_TOLERANCE},
    {"KEDA: inactive past cooldown, depth in (0, activation] -> 0", PROFILE_COOL, 10, 50, 0, 100,
     true, 40, 301, true, 40, 4, 0, 0, GUARD_NONE},
    {"KEDA minReplicaCount > 0: never deactivates below min", PROFILE_COOL, 10, 0, 2, 100, true, 50,
     301, true, 0, 3, 2, 2, GUARD_MIN},
    /* Clamp: HPA minReplicas/maxReplicas. */
    {"HPA maxReplicas: 1000 msgs / 10 -> max 10", PROFILE_FREE, 10, 0, 0, 10, false, 0, 0, true,
     1000, 2, 10, 10, GUARD_MAX},
    {"HPA: current above a lowered max -> max at once, even with windows", PROFILE_DEFAULTS, 10, 0,
     0, 5, false, 0, 0, true, 80, 8, 5, 5, GUARD_MAX},
    {"HPA: current below a raised min -> min", PROFILE_DEFAULTS, 10, 0, 3, 10, false, 0, 0, true, 0,
     1, 3, 3, GUARD_MIN},
    /* Unknown is never zero (SPEC). HPA: invalid metrics never scale down. */
    {"unknown is never zero: hold", PROFILE_DEFAULTS, 10, 0, 0, 10, false, 0, 0, false, 0, 5, 5, 5,
     GUARD_ERROR_HOLD},
    {"unknown is never zero: hold at 0 too", PROFILE_DEFAULTS, 10, 0, 0, 10, false, 0, 0, false, 0,
     0, 0, 0, GUARD_ERROR_HOLD},
    {"unknown is never zero: NaN depth holds", PROFILE_FREE, 10, 0, 0, 10, false, 0, 0, true, NAN,
     5, 5, 5, GUARD_ERROR_HOLD},
    {"unknown is never zero: infinite depth holds", PROFILE_FREE, 10, 0, 0, 10, false, 0, 0, true,
     INFINITY, 5, 5, 5, GUARD_ERROR_HOLD},
    {"unknown is never zero: negative depth holds", PROFILE_FREE, 10, 0, 0, 10, false, 0, 0, true,
     -3, 5, 5, 5, GUARD_ERROR_HOLD},
    {"robustness: target 0 cannot recommend, holds", PROFILE_FREE, 0, 0, 0, 10, false, 0, 0, true,
     50, 5, 5, 5, GUARD_ERROR_HOLD},
    {"robustness: NaN target holds", PROFILE_FREE, NAN, 0, 0, 10, false, 0, 0, true, 50, 5, 5, 5,
     GUARD_ERROR_HOLD},
    {"robustness: huge depth saturates, clamped to max", PROFILE_FREE, 10, 0, 0, 10, false, 0, 0,
     true, 1e300, 5, 10, 10, GUARD_MAX},
    {"unknown under hold: a lowered max still applies (operator's order)", PROFILE_DEFAULTS, 10, 0,
     0, 4, false, 0, 0, false, 0, 6, 6, 4, GUARD_MAX},
    /* Restart: the history is seeded with (now, current) and last_active = now. */
    {"restart does not scale down before the window (HPA down window from first sight)",
     PROFILE_DEFAULTS, 10, 0, 0, 10, false, 0, 0, true, 0, 5, 0, 5, GUARD_STABILIZATION},
    {"restart with cooldown only: held at 1, not dropped to 0 (KEDA cooldown from first sight)",
     PROFILE_COOL, 10, 0, 0, 10, false, 0, 0, true, 0, 5, 0, 1, GUARD_COOLDOWN},
    /* HPA Pods policy on scale-up; sluice starts from zero through it too. */
    {"HPA Pods policy: 0 -> 4 of 10 on the first tick (max_step 4)", PROFILE_DEFAULTS, 10, 0, 0, 10,
     false, 0, 0, true, 100, 0, 10, 4, GUARD_STEP_LIMIT},
    {"HPA scale-up stabilization 0: scale up at once within the step", PROFILE_DEFAULTS, 10, 0, 0,
     10, false, 0, 0, true, 30, 1, 3, 3, GUARD_NONE},
};

/* One cmocka test (one TAP line) per row; STATE points at the row. */
static void test_case(void **state)
{
	const Case *c = *state;
	PoolConfig p = pool(c->prof);
	PolicyState s;
	Decision d;

	p.target = c->target;
	p.activation = c->activation;
	p.min = c->min;
	p.max = c->max;
	policy_state_init(&s);
	if (c->warm)
		policy_decide(&p, &s, ok(c->warm_depth), c->current, 0);
	d = policy_decide(&p, &s, (Reading){.valid = c->valid, .depth = c->depth}, c->current,
	                  c->t);
	if (d.recommendation != c->want_rec || d.desired != c->want_desired ||
	    d.guard != c->want_guard)
		fail_msg("\"%s\": got rec %d desired %d guard %s, want rec %d desired %d guard %s",
		         c->why, d.recommendation, d.desired, guard_to_string(d.guard), c->want_rec,
		         c->want_desired, guard_to_string(c->want_guard));
}

static void test_decision_fields(void **state)
{
	PoolConfig p = pool(PROFILE_FREE);
	PolicyState s;
	Decision d;

	(void)state;
	policy_state_init(&s);
	d = policy_decide(&p, &s, ok(105), 10, 0);
	assert_true(d.active);
	assert_near(d.ratio, 1.05, 1e-12);

	/* ratio is 0 when current is 0 or the reading unknown; unknown is not active */
	d = policy_decide(&p, &s, ok(105), 0, 1);
	assert_near(d.ratio, 0, 0);
	d = policy_decide(&p, &s, unknown, 10, 2);
	assert_near(d.ratio, 0, 0);
	assert_false(d.active);
}

static void test_guard_names(void **state)
{
	static const char *const want[_GUARD_MAX] = {
	    "none", "tolerance", "activation", "cooldown", "stabilization", "step limit",
	    "min",  "max",       "error hold", "fallback", "backoff",
	};

	(void)state;
	for (int g = 0; g < _GUARD_MAX; g++)
		assert_string_equal(guard_to_string((Guard)g), want[g]);
	assert_null(guard_to_string(_GUARD_MAX));
	assert_null(guard_to_string((Guard)-1));
}

/* ---- scenarios on a simulated clock ---------------------------------------------------- */

/* A world where every decision is carried out before the next tick. */
typedef struct {
	PoolConfig p;
	PolicyState s;
	int current;
	double now;
	unsigned changes;
	Decision last;
} Sim;

static void sim_init(Sim *w, PoolConfig p, int current)
{
	w->p = p;
	policy_state_init(&w->s);
	w->current = current;
	w->now = 0;
	w->changes = 0;
}

/* Decide at the current time, apply, advance the clock by one tick; returns desired. */
static int sim_tick(Sim *w, Reading r)
{
	w->last = policy_decide(&w->p, &w->s, r, w->current, w->now);
	if (w->last.desired != w->current)
		w->changes++;
	w->current = w->last.desired;
	w->now += TICK;
	return w->current;
}

/* Run until time T (exclusive) with the same reading. */
static void sim_until(Sim *w, Reading r, double t)
{
	while (w->now < t)
		sim_tick(w, r);
}

/* HPA Pods policy: max_step per period. 4 per 15 s with a 5 s tick. */
static void test_scale_up_stepwise(void **state)
{
	static const int want[] = {4, 4, 4, 8, 8, 8, 10, 10, 10};
	Sim w;

	(void)state;
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		double t = w.now;
		int got = sim_tick(&w, ok(100));
		if (got != want[i])
			fail_msg("t=%g: desired %d, want %d", t, got, want[i]);
	}
	assert_int_equal(w.changes, 3);
}

/* Returns the time at which the pool first reached N, draining from 10 after a backlog that
 * was last seen at t = 60. */
static void drain(Sim *w, double cooldown, double reached[11])
{
	PoolConfig p = pool(PROFILE_DEFAULTS);

	p.cooldown = cooldown;
	sim_init(w, p, 0);
	sim_until(w, ok(100), 65); /* last active tick: t = 60 */
	assert_int_equal(w->current, 10);
	for (int i = 0; i <= 10; i++)
		reached[i] = -1;
	reached[10] = 60;
	while (w->now < 3000) {
		int before = w->current;
		double t = w->now;
		int got = sim_tick(w, ok(0));

		/* no jump from N to 0, unlike KEDA (#7770): at most max_step per tick */
		assert_true(got <= before);
		assert_true(before - got <= 1);
		if (reached[got] < 0)
			reached[got] = t;
	}
}

/* HPA scale-down stabilization: max over the 300 s window; HPA Pods policy 1 per 60 s; KEDA
 * cooldownPeriod, but stepwise per #7770. */
static void test_drain_window_then_steps(void **state)
{
	double reached[11];
	Sim w;

	(void)state;
	drain(&w, 300, reached);
	/* the last recommendation of 10 was at t = 60; it leaves the window at exactly 360 */
	assert_near(reached[9], 360, 0);
	for (int n = 8; n >= 1; n--)
		assert_near(reached[n], 360 + 60 * (9 - n), 0);
	/* the cooldown ended long ago (360 > 60 + 300): 1 -> 0 is just the next step */
	assert_near(reached[0], 900, 0);
	assert_int_equal(w.current, 0);
	assert_int_equal(w.changes, 3 + 10);
}

/* KEDA cooldownPeriod: zero only when inactive for longer than cooldown since the last
 * activity; here that is after the step-down to 1 is over. */
static void test_drain_zero_after_cooldown(void **state)
{
	double reached[11];
	Sim w;

	(void)state;
	drain(&w, 1200, reached);
	assert_near(reached[1], 840, 0);
	/* held at 1 by the cooldown: last active at 60, 60 + 1200 < now first at 1265 */
	assert_near(reached[0], 1265, 0);

	/* and while held, the guard says so */
	sim_init(&w, w.p, 0);
	sim_until(&w, ok(100), 65);
	sim_until(&w, ok(0), 1260);
	assert_int_equal(w.current, 1);
	sim_tick(&w, ok(0)); /* t = 1260 */
	assert_int_equal(w.last.desired, 1);
	assert_int_equal(w.last.guard, GUARD_COOLDOWN);
	assert_int_equal(w.last.recommendation, 0);
}

/* Deliberate difference from the brief's first draft (docs/policy.md): the cooldown floor is
 * not recorded into the down window, so with the defaults a one-worker pool goes to zero 300 s
 * after the last backlog, as with KEDA, and not after cooldown + window = 600 s. */
static void test_single_worker_to_zero_after_cooldown(void **state)
{
	Sim w;

	(void)state;
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	sim_until(&w, ok(5), 65); /* one worker, last active at 60 */
	assert_int_equal(w.current, 1);
	sim_until(&w, ok(0), 360);
	assert_int_equal(w.current, 1);
	sim_tick(&w, ok(0)); /* 360: cooldown 60 + 300 < 360 is false */
	assert_int_equal(w.current, 1);
	sim_tick(&w, ok(0)); /* 365 */
	assert_int_equal(w.current, 0);
}

/* HPA scale-up stabilization: the lowest recommendation in the up window. */
static void test_up_window_takes_min(void **state)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	Sim w;

	(void)state;
	p.up.stabilization = 30;
	p.up.max_step = 100;
	sim_init(&w, p, 2);
	sim_tick(&w, ok(20)); /* t=0: rec 2 (and the seed 2) */
	assert_int_equal(w.current, 2);
	/* a spike to 10 is held at the lowest recommendation of the last 30 s */
	sim_tick(&w, ok(100)); /* t=5 */
	assert_int_equal(w.current, 2);
	assert_int_equal(w.last.guard, GUARD_STABILIZATION);
	assert_int_equal(w.last.recommendation, 10);
	sim_tick(&w, ok(60)); /* t=10: min over window still 2 */
	assert_int_equal(w.current, 2);
	sim_until(&w, ok(100), 30);
	assert_int_equal(w.current, 2); /* the 2s of t=0 are in (now - 30, now] until t=30 */
	sim_tick(&w, ok(100));          /* t=30: window (0, 30] holds 10, 6, 10...: min 6 */
	assert_int_equal(w.current, 6);
	sim_tick(&w, ok(100)); /* t=35: window (5, 35]: still 6 from t=10 */
	assert_int_equal(w.current, 6);
	sim_tick(&w, ok(100)); /* t=40: the 6 of t=10 is out */
	assert_int_equal(w.current, 10);
}

/* HPA scale-down stabilization: max over the window, including intermediate values. */
static void test_down_window_takes_max(void **state)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	Sim w;

	(void)state;
	p.down.max_step = 100;
	sim_init(&w, p, 0);
	sim_until(&w, ok(100), 35); /* 4, 8, 10 at t = 30 */
	assert_int_equal(w.current, 10);
	sim_until(&w, ok(60), 100); /* ratio 0.6: rec 6 from t = 35 to 95 */
	assert_int_equal(w.current, 10);
	sim_until(&w, ok(0), 330); /* last 10 at t = 30 */
	assert_int_equal(w.current, 10);
	sim_tick(&w, ok(0)); /* t = 330: highest of (30, 330] is 6 */
	assert_int_equal(w.current, 6);
	assert_int_equal(w.last.guard, GUARD_STABILIZATION);
	sim_until(&w, ok(0), 395);
	assert_int_equal(w.current, 6);
	/* t = 395: the 6 of t = 95 is out, but 60 messages were activity: the cooldown
	 * (95 + 300 < now) holds one worker for one more tick */
	sim_tick(&w, ok(0));
	assert_int_equal(w.current, 1);
	assert_int_equal(w.last.guard, GUARD_COOLDOWN);
	sim_tick(&w, ok(0));
	assert_int_equal(w.current, 0);
}

/* HPA rate policy: periodStart = current - added + removed in the period; a limit on the
 * wrong side of current means "no change". */
static void test_step_counts_removals(void **state)
{
	PoolConfig p = pool(PROFILE_FREE);
	PolicyState s;
	Decision d;

	(void)state;
	p.up = (ScaleRule){.stabilization = 0, .max_step = 2, .period = 60};
	p.down = (ScaleRule){.stabilization = 0, .max_step = 100, .period = 60};
	p.cooldown = 0;
	policy_state_init(&s);
	d = policy_decide(&p, &s, ok(100), 5, 0); /* up 2: 5 -> 7 */
	assert_int_equal(d.desired, 7);
	assert_int_equal(d.guard, GUARD_STEP_LIMIT);
	d = policy_decide(&p, &s, ok(100), 7, 10); /* periodStart 5: limit 7 */
	assert_int_equal(d.desired, 7);
	assert_int_equal(d.guard, GUARD_STEP_LIMIT);
	d = policy_decide(&p, &s, ok(20), 7, 20); /* down to 2, removal counts */
	assert_int_equal(d.desired, 2);
	d = policy_decide(&p, &s, ok(100), 2, 30); /* periodStart 2 - 2 + 5 = 5: limit 7 */
	assert_int_equal(d.desired, 7);
	d = policy_decide(&p, &s, ok(100), 7, 59); /* +2, -5, +5 in (-1, 59]: start 5 */
	assert_int_equal(d.desired, 7);
	/* the add at 0 leaves the period at exactly 60 (Go's After is strict):
	 * start = 7 - 5 + 5 = 7, limit 9 */
	d = policy_decide(&p, &s, ok(100), 7, 60);
	assert_int_equal(d.desired, 9);
}

/* Flapping input (a square wave around the threshold) changes the pool a bounded number of
 * times: HPA stabilization and tolerance (reference section 7, pain point 10). */
static void test_flapping_bounded(void **state)
{
	Sim w;

	(void)state;
	/* 0 / 100 messages, switching every 20 s, for two hours */
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	while (w.now < 7200)
		sim_tick(&w, ok(fmod(w.now, 40) < 20 ? 100 : 0));
	assert_int_equal(w.current, 10);
	assert_true(w.changes <= 3);

	/* 95 / 105 messages at 10 workers: within the tolerance, never a change */
	sim_init(&w, pool(PROFILE_DEFAULTS), 10);
	while (w.now < 7200)
		sim_tick(&w, ok(fmod(w.now, 10) < 5 ? 95 : 105));
	assert_int_equal(w.changes, 0);

	/* 0 / 30 messages with a 10-minute period: at most one cycle up and down per period */
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	while (w.now < 7200)
		sim_tick(&w, ok(fmod(w.now, 1200) < 600 ? 30 : 0));
	assert_true(w.changes <= 2 * (7200 / 1200) * 3);
}

/* Unknown is never zero (SPEC): hold through a long outage, then recover by itself. */
static void test_unknown_holds_then_recovers(void **state)
{
	Sim w;

	(void)state;
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	sim_until(&w, ok(100), 35);
	assert_int_equal(w.current, 10);
	while (w.now < 2000) {
		sim_tick(&w, unknown);
		assert_int_equal(w.current, 10);
		assert_int_equal(w.last.guard, GUARD_ERROR_HOLD);
	}
	assert_true(w.s.failures > 300);
	/* readings are back and say 30: failures reset, the pool steps down (the outage left
	 * no recommendation in the down window) */
	sim_tick(&w, ok(30));
	assert_int_equal(w.s.failures, 0);
	assert_int_equal(w.current, 9);
}

/* An unknown reading is never a recommendation: it cannot shorten the down window either. */
static void test_unknown_not_recorded(void **state)
{
	Sim w;
	size_t n;

	(void)state;
	sim_init(&w, pool(PROFILE_DEFAULTS), 0);
	sim_tick(&w, ok(100));
	n = w.s.n_recs;
	sim_tick(&w, unknown);
	sim_tick(&w, ok(NAN));
	assert_int_equal(w.s.n_recs, n);
}

/* KEDA fallback (failureThreshold, replicas) with sluice's count: the failure_threshold-th
 * consecutive failure engages it. It skips the windows and moves at max_step per period. */
static void test_fallback_after_threshold(void **state)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	Sim w;

	(void)state;
	p.on_error = ON_ERROR_FALLBACK;
	p.fallback = 2;
	p.failure_threshold = 3;
	sim_init(&w, p, 0);
	sim_until(&w, ok(60), 15); /* 0 -> 4 -> 6 */
	sim_until(&w, ok(60), 60);
	assert_int_equal(w.current, 6);

	/* two failures, a good reading, two failures: the count restarts, still holding */
	sim_tick(&w, unknown);
	sim_tick(&w, unknown);
	sim_tick(&w, ok(60));
	sim_tick(&w, unknown);
	sim_tick(&w, unknown);
	assert_int_equal(w.current, 6);
	assert_int_equal(w.last.guard, GUARD_ERROR_HOLD);

	/* third consecutive: fallback, down at 1 per 60 s despite the 300 s window */
	sim_tick(&w, unknown);
	assert_int_equal(w.current, 5);
	assert_int_equal(w.last.guard, GUARD_FALLBACK);
	assert_int_equal(w.last.recommendation, 2);
	for (int i = 0; i < 11; i++) {
		sim_tick(&w, unknown);
		assert_int_equal(w.current, 5);
		assert_int_equal(w.last.guard, GUARD_FALLBACK);
	}
	sim_tick(&w, unknown);
	assert_int_equal(w.current, 4);
	sim_until(&w, unknown, w.now + 600);
	assert_int_equal(w.current, 2);
	assert_int_equal(w.last.guard, GUARD_FALLBACK);

	/* recovery: a real backlog scales up again */
	sim_tick(&w, ok(100));
	assert_int_equal(w.current, 6);
	assert_int_equal(w.s.failures, 0);
}

/* KEDA >= 2.19 (#7239): a fallback can scale a pool up from zero. */
static void test_fallback_from_zero(void **state)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	Sim w;

	(void)state;
	p.on_error = ON_ERROR_FALLBACK;
	p.fallback = 6;
	p.failure_threshold = 1;
	sim_init(&w, p, 0);
	sim_tick(&w, unknown);
	assert_int_equal(w.current, 4);
	assert_int_equal(w.last.guard, GUARD_FALLBACK);
	sim_until(&w, unknown, 15);
	assert_int_equal(w.current, 4);
	sim_tick(&w, unknown);
	assert_int_equal(w.current, 6);
}

/* History never grows past POLICY_HISTORY_MAX and is pruned to the windows. */
static void test_history_bounded(void **state)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	PolicyState s;

	(void)state;
	p.down.stabilization = 1e6;
	p.up.period = 1e6;
	policy_state_init(&s);
	for (int i = 0; i < 5000; i++) {
		policy_decide(&p, &s, ok(i % 2 ? 100 : 0), i % 7, i * 0.01);
		assert_true(s.n_recs <= POLICY_HISTORY_MAX);
		assert_true(s.n_events <= POLICY_HISTORY_MAX);
	}
	assert_int_equal(s.n_recs, POLICY_HISTORY_MAX);

	p = pool(PROFILE_DEFAULTS);
	policy_state_init(&s);
	for (int i = 0; i < 5000; i++)
		policy_decide(&p, &s, ok(i % 50 ? 100 : 0), i % 7, i * TICK);
	/* 300 s window + margin at a 5 s tick */
	assert_true(s.n_recs <= 80);
	assert_true(s.n_events <= 40);
}

/* ---- invariants over random sequences -------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rng(void)
{
	/* xorshift64*: small, seeded, the same on every machine */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

static uint32_t rng_below(uint32_t n)
{
	return rng() % n;
}

static void random_run(uint64_t seed, OnError on_error)
{
	PoolConfig p = pool(PROFILE_DEFAULTS);
	PolicyState s;
	double now = 0, last_active = 0;
	int current;

	rng_state = seed;
	p.target = 1 + rng_below(20);
	p.activation = rng_below(3) ? 0 : rng_below(30);
	p.min = (int)rng_below(3);
	p.max = p.min + 1 + (int)rng_below(15);
	p.cooldown = rng_below(600);
	p.up = (ScaleRule){rng_below(60), 1 + (int)rng_below(5), 1 + rng_below(60)};
	p.down = (ScaleRule){rng_below(600), 1 + (int)rng_below(5), 1 + rng_below(120)};
	p.on_error = on_error;
	p.failure_threshold = 1 + (int)rng_below(5);
	p.fallback = p.min + (int)rng_below((uint32_t)(p.max - p.min + 1));
	current = (int)rng_below((uint32_t)p.max + 1);
	policy_state_init(&s);

	for (int i = 0; i < 10000; i++) {
		Reading r;
		Decision d;
		uint32_t k = rng_below(100);

		if (k < 10)
			r = unknown;
		else if (k < 12)
			r = ok(k == 10 ? NAN : -1);
		else if (k < 40)
			r = ok(0);
		else
			r = ok(rng_below(300));

		d = policy_decide(&p, &s, r, current, now);
		if (i == 0)
			last_active = now;
		if (r.valid && r.depth > p.activation && isfinite(r.depth))
			last_active = now;

		/* min <= desired <= max, always */
		assert_in_range(d.desired, p.min, p.max);
		assert_non_null(guard_to_string(d.guard));
		assert_true(d.guard != GUARD_BACKOFF);
		if (!r.valid || !isfinite(r.depth) || r.depth < 0) {
			/* an unknown reading never lowers desired under hold */
			if (on_error == ON_ERROR_HOLD) {
				assert_int_equal(d.desired, CLAMP(current, p.min, p.max));
				assert_false(d.active);
			}
		} else if (current > 0 && d.desired == 0) {
			/* zero only past the cooldown since the last activity (KEDA, strict) */
			assert_true(last_active + p.cooldown < now);
		}

		/* the world: mostly does as told, sometimes lags or loses a worker */
		k = rng_below(10);
		if (k < 7)
			current = d.desired;
		else if (k == 7 && current > 0)
			current--;
		else if (k == 8)
			current = (int)rng_below((uint32_t)p.max + 3);
		now += 0.5 + rng_below(200) / 10.0;
	}
}

static void test_random_invariants(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 8; seed++) {
		random_run(seed * 0x9E3779B97F4A7C15ULL, ON_ERROR_HOLD);
		random_run(seed * 0xBF58476D1CE4E5B9ULL, ON_ERROR_FALLBACK);
	}
}

/* HPA rate policies in a world that follows the decisions: whenever the pool grows, the net
 * change over the last up.period (this one included) is at most up.max_step; whenever it
 * shrinks, at least -down.max_step over the last down.period. */
static long net_change(const PolicySample *ev, size_t n, double period, double now)
{
	long sum = 0;

	for (size_t i = 0; i < n; i++)
		if (ev[i].time > now - period)
			sum += ev[i].value;
	return sum;
}

static void test_random_rate(void **state)
{
	static PolicySample ev[10000];

	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++) {
		PoolConfig p = pool(PROFILE_DEFAULTS);
		PolicyState s;
		size_t n = 0;
		double now = 0;
		int current = 0;

		rng_state = seed * 0x94D049BB133111EBULL;
		p.max = 50;
		p.down.stabilization = rng_below(2) ? 0 : 30;
		p.up.max_step = 1 + (int)rng_below(6);
		p.down.max_step = 1 + (int)rng_below(6);
		p.cooldown = 0;
		policy_state_init(&s);
		for (int i = 0; i < 10000; i++) {
			Reading r = ok(rng_below(4) ? rng_below(600) : 0);
			Decision d = policy_decide(&p, &s, r, current, now);

			if (d.desired != current)
				ev[n++] = (PolicySample){now, d.desired - current};
			if (d.desired > current)
				assert_true(net_change(ev, n, p.up.period, now) <= p.up.max_step);
			if (d.desired < current)
				assert_true(net_change(ev, n, p.down.period, now) >=
				            -p.down.max_step);
			current = d.desired;
			now += 0.5 + rng_below(100) / 10.0;
		}
	}
}

int main(void)
{
#define T(f, n)                                                                                    \
	{                                                                                          \
		.name = (n), .test_func = (f)                                                      \
	}
	static const struct CMUnitTest scenarios[] = {
	    T(test_decision_fields,
	      "Decision: ratio = depth/(target x current), 0 when unknown or at zero; active"),
	    T(test_guard_names, "guard_to_string: lowercase names, NULL out of range"),
	    T(test_scale_up_stepwise,
	      "HPA Pods policy: backlog 100/target 10, 4 per 15 s -> 4, 8, 10"),
	    T(test_drain_window_then_steps, "HPA scale-down stabilization: max over 300 s window, "
	                                    "then 1 per 60 s to 0 (stepwise per KEDA #7770)"),
	    T(test_drain_zero_after_cooldown,
	      "KEDA cooldownPeriod, but stepwise per #7770: held at 1 until cooldown"),
	    T(test_single_worker_to_zero_after_cooldown,
	      "KEDA cooldownPeriod: one worker goes to 0 at max(cooldown, window), not their sum"),
	    T(test_up_window_takes_min, "HPA scale-up stabilization: min over window"),
	    T(test_down_window_takes_max,
	      "HPA scale-down stabilization: max over window, intermediate values kept"),
	    T(test_step_counts_removals,
	      "HPA Pods policy: periodStart = current - added + removed, strict period"),
	    T(test_flapping_bounded,
	      "flapping input (square wave) produces a bounded number of changes"),
	    T(test_unknown_holds_then_recovers,
	      "unknown is never zero: hold through an outage, recover by itself"),
	    T(test_unknown_not_recorded, "unknown is never a recommendation: history untouched"),
	    T(test_fallback_after_threshold,
	      "fallback after failure_threshold, stepwise, skipping the windows"),
	    T(test_fallback_from_zero, "KEDA #7239: fallback scales up from zero"),
	    T(test_history_bounded,
	      "history capped at POLICY_HISTORY_MAX and pruned to the windows"),
	    T(test_random_invariants, "invariants over 16 x 10000 random ticks: min <= desired <= "
	                              "max, hold never lowers, zero only past cooldown"),
	    T(test_random_rate,
	      "HPA rate policies over random ticks: net change per period <= max_step"),
	};
	struct CMUnitTest tests[ELEMENTSOF(cases) + ELEMENTSOF(scenarios)];
	size_t n = 0;

	for (size_t i = 0; i < ELEMENTSOF(cases); i++)
		tests[n++] = (struct CMUnitTest){
		    .name = cases[i].why,
		    .test_func = test_case,
		    .initial_state = (void *)&cases[i],
		};
	for (size_t i = 0; i < ELEMENTSOF(scenarios); i++)
		tests[n++] = scenarios[i];
	return _cmocka_run_group_tests("policy", tests, n, NULL, NULL);
}
