/* SPDX-License-Identifier: MIT */
/* The scaling policy: KEDA's activation/cooldown loop merged with the Kubernetes HPA
 * (AverageValue, tolerance, stabilization windows, Pods rate policies). Pure: no I/O, no clock,
 * no logging. The algorithm and where it differs from KEDA/HPA are in docs/policy.md; the
 * reference is shared/reference/keda-hpa-semantics.md sections 2, 4 and 9. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "macro.h"
#include "policy.h"

/* History is kept this much longer than the longest window, so a reload that lengthens a
 * window a little still finds the samples it needs. */
#define PRUNE_MARGIN 60.0

static const char *const guard_table[_GUARD_MAX] = {
    [GUARD_NONE] = "none",
    [GUARD_TOLERANCE] = "tolerance",
    [GUARD_ACTIVATION] = "activation",
    [GUARD_COOLDOWN] = "cooldown",
    [GUARD_STABILIZATION] = "stabilization",
    [GUARD_STEP_LIMIT] = "step limit",
    [GUARD_MIN] = "min",
    [GUARD_MAX] = "max",
    [GUARD_ERROR_HOLD] = "error hold",
    [GUARD_FALLBACK] = "fallback",
    [GUARD_BACKOFF] = "backoff",
};

const char *guard_to_string(Guard g)
{
	if ((int)g < 0 || g >= _GUARD_MAX)
		return NULL;
	return guard_table[g];
}

void policy_state_init(PolicyState *s)
{
	memset(s, 0, sizeof(*s));
}

/* A negative or NaN duration from a broken config means "no window". */
static double duration(double d)
{
	return d > 0 ? d : 0;
}

/* Drop samples not newer than CUTOFF (they are out of every window), then make room for one
 * more by dropping the oldest. Samples are in time order, oldest first. */
static void history_prune(PolicySample *v, size_t *n, double cutoff)
{
	size_t drop = 0;

	while (drop < *n && v[drop].time < cutoff)
		drop++;
	if (*n - drop >= POLICY_HISTORY_MAX)
		drop = *n - POLICY_HISTORY_MAX + 1;
	if (drop > 0) {
		memmove(v, v + drop, (*n - drop) * sizeof(*v));
		*n -= drop;
	}
}

static void history_push(PolicySample *v, size_t *n, double keep, double now, int value)
{
	history_prune(v, n, now - keep - PRUNE_MARGIN);
	v[(*n)++] = (PolicySample){.time = now, .value = value};
}

static double recs_keep(const PoolConfig *p)
{
	return MAX(duration(p->up.stabilization), duration(p->down.stabilization));
}

static double events_keep(const PoolConfig *p)
{
	return MAX(duration(p->up.period), duration(p->down.period));
}

/* HPA getReplicasChangePerPeriod: net change by scale events strictly inside the last PERIOD
 * seconds (timestamp.After(now - period)). */
static long change_in_period(const PolicyState *s, double period, double now)
{
	double cutoff = now - duration(period);
	long sum = 0;

	for (size_t i = 0; i < s->n_events; i++)
		if (s->events[i].time > cutoff)
			sum += s->events[i].value;
	return sum;
}

/* HPA calculateScale{Up,Down}Limit with one Pods policy per direction, then
 * convertDesiredReplicasWithBehaviorRate: a limit on the wrong side of current is current. */
static int step_limit(const PoolConfig *p, const PolicyState *s, int current, int result,
                      double now, Guard *guard)
{
	if (result > current) {
		long start = (long)current - change_in_period(s, p->up.period, now);
		long limit = start + MAX(p->up.max_step, 0);

		if (result > limit) {
			result = (int)MAX(limit, (long)current);
			*guard = GUARD_STEP_LIMIT;
		}
	} else if (result < current) {
		long start = (long)current - change_in_period(s, p->down.period, now);
		long limit = start - MAX(p->down.max_step, 0);

		if (result < limit) {
			result = (int)MIN(limit, (long)current);
			*guard = GUARD_STEP_LIMIT;
		}
	}
	return result;
}

static int clamp(const PoolConfig *p, int v, Guard *guard)
{
	if (v > p->max) {
		*guard = GUARD_MAX;
		v = p->max;
	}
	if (v < p->min) {
		*guard = GUARD_MIN;
		v = p->min;
	}
	return v;
}

/* HPA stabilizeRecommendationWithBehaviors: up to the lowest recommendation in the up window,
 * down to the highest in the down window. A sample counts while timestamp > now - window (Go's
 * After), so a 0 s window holds only the new sample. */
static int stabilize(const PoolConfig *p, const PolicyState *s, int current, int rec, double now)
{
	double up_cutoff = now - duration(p->up.stabilization);
	double down_cutoff = now - duration(p->down.stabilization);
	int up = rec, down = rec, result = current;

	for (size_t i = 0; i < s->n_recs; i++) {
		if (s->recs[i].time > up_cutoff)
			up = MIN(up, s->recs[i].value);
		if (s->recs[i].time > down_cutoff)
			down = MAX(down, s->recs[i].value);
	}
	if (result < up)
		result = up;
	if (result > down)
		result = down;
	return result;
}

static bool reading_usable(const PoolConfig *p, Reading r)
{
	/* A NaN, infinite or negative depth is implausible, and without a positive target no
	 * recommendation can be computed: both are "unknown", never zero. */
	return r.valid && isfinite(r.depth) && r.depth >= 0 && isfinite(p->target) && p->target > 0;
}

/* ceil(depth / target) as an int, saturating instead of overflowing. */
static int replicas_for(double depth, double target)
{
	double q = ceil(depth / target);

	if (!(q >= 0))
		return 0;
	if (q >= (double)INT_MAX)
		return INT_MAX;
	return (int)q;
}

static void record_event(const PoolConfig *p, PolicyState *s, int current, int desired, double now)
{
	if (desired != current)
		history_push(s->events, &s->n_events, events_keep(p), now, desired - current);
}

/* Unknown reading: hold, or after failure_threshold failures move to the fallback. */
static Decision decide_unknown(const PoolConfig *p, PolicyState *s, int current, double now)
{
	Decision d = {.desired = current, .recommendation = current};
	Guard guard;

	if (s->failures < UINT_MAX)
		s->failures++;

	if (p->on_error == ON_ERROR_FALLBACK && p->failure_threshold >= 0 &&
	    s->failures >= (unsigned)p->failure_threshold) {
		/* The fallback is an order, not a measurement: it skips the stabilization windows
		 * (which would hold it for minutes) and is not recorded as a recommendation,
		 * but it moves at max_step per period like any change. */
		Guard step_guard = GUARD_NONE; /* the fallback is what the operator sees */

		d.recommendation = p->fallback;
		d.desired = step_limit(p, s, current, p->fallback, now, &step_guard);
		guard = GUARD_FALLBACK;
	} else {
		/* Hold: no recommendation is recorded, so an outage can neither drag the down
		 * window nor count as "no backlog". Only an operator's min/max moves the pool. */
		guard = GUARD_ERROR_HOLD;
	}

	d.desired = clamp(p, d.desired, &guard);
	d.guard = guard;
	record_event(p, s, current, d.desired, now);
	return d;
}

Decision policy_decide(const PoolConfig *p, PolicyState *s, Reading r, int current, double now)
{
	Decision d = {0};
	Guard guard = GUARD_NONE;
	int rec, result;
	bool cooldown_over;

	if (current < 0)
		current = 0;

	/* A (re)start must not scale down before the down window has passed, nor go to zero
	 * before the cooldown: both count from sluice's first sight of the pool. */
	if (!s->initialized) {
		s->initialized = true;
		s->n_recs = s->n_events = 0;
		s->failures = 0;
		history_push(s->recs, &s->n_recs, recs_keep(p), now, current);
		s->last_active = now;
	}

	if (!reading_usable(p, r))
		return decide_unknown(p, s, current, now);

	s->failures = 0;
	d.active = r.depth > p->activation; /* KEDA: strict > */
	if (d.active)
		s->last_active = now;
	/* KEDA scale_scaledobjects.go: lastActiveTime + cooldownPeriod < now (strict). */
	cooldown_over = s->last_active + duration(p->cooldown) < now;

	/* HPA GetExternalPerPodMetricReplicas (AverageValue): ceil(total / target), unless the
	 * ratio to the current size is within the tolerance, bounds inclusive. */
	rec = replicas_for(r.depth, p->target);
	if (current > 0) {
		d.ratio = r.depth / (p->target * current);
		if (d.ratio >= 1.0 - POLICY_TOLERANCE && d.ratio <= 1.0 + POLICY_TOLERANCE &&
		    rec != current) {
			rec = current;
			guard = GUARD_TOLERANCE;
		}
	}

	if (!d.active) {
		if (current == 0) {
			/* KEDA activation: a pool at zero wakes only when depth > activation. */
			if (rec != 0)
				guard = GUARD_ACTIVATION;
			rec = 0;
		} else if (cooldown_over) {
			/* KEDA deactivation: inactive past the cooldown means zero, even with
			 * depth in (0, activation]. Unlike KEDA it goes through the windows and
			 * the step limit below. */
			guard = GUARD_NONE;
			rec = 0;
		}
	} else
		rec = MAX(rec, 1);

	rec = clamp(p, rec, &guard);
	d.recommendation = rec;
	history_push(s->recs, &s->n_recs, recs_keep(p), now, rec);

	result = stabilize(p, s, current, rec, now);
	if (result != rec)
		guard = GUARD_STABILIZATION;

	/* Cooldown: going below one worker needs cooldown seconds without activity. It is a
	 * floor applied after the windows, not a recommendation recorded into them, so the
	 * down window and the cooldown run concurrently (see docs/policy.md). */
	if (result == 0 && current > 0 && !cooldown_over) {
		result = 1;
		guard = GUARD_COOLDOWN;
	}

	result = step_limit(p, s, current, result, now, &guard);
	result = clamp(p, result, &guard);

	d.desired = result;
	d.guard = guard;
	record_event(p, s, current, result, now);
	return d;
}
