/* SPDX-License-Identifier: MIT */
/* The scaling policy: a pure function of the pool's configuration, its policy history, one
 * depth reading, the current worker count and the time. It never does I/O, never reads the
 * clock and never logs; the caller owns the history and passes it in. Semantics: KEDA's
 * activation/cooldown loop merged with the Kubernetes HPA (AverageValue target, 10 % tolerance,
 * per-direction stabilization windows, max_step per period), with N -> 0 going through the
 * scale-down policy instead of KEDA's jump. See docs/policy.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define POLICY_TOLERANCE 0.1
#define POLICY_HISTORY_MAX 512

typedef enum {
	GUARD_NONE,          /* the recommendation went through unchanged */
	GUARD_TOLERANCE,     /* depth/(target*current) within 10 %: no change */
	GUARD_ACTIVATION,    /* pool at zero, depth <= activation: stays at zero */
	GUARD_COOLDOWN,      /* no backlog, but cooldown not over: held at >= 1 */
	GUARD_STABILIZATION, /* held by the up (lowest) or down (highest) window */
	GUARD_STEP_LIMIT,    /* max_step per period reached */
	GUARD_MIN,           /* clamped up to min */
	GUARD_MAX,           /* clamped down to max */
	GUARD_ERROR_HOLD,    /* reading unknown: size held */
	GUARD_FALLBACK,      /* failure_threshold reached: moving to fallback */
	GUARD_BACKOFF,       /* (set by the reconciler, not the policy) workers crash-looping */
	_GUARD_MAX,
} Guard;

const char *guard_to_string(Guard g);

typedef struct {
	double time;
	int value;
} PolicySample;

/* History the policy needs between ticks. Zero-initialise with policy_state_init(). */
typedef struct {
	bool initialized;       /* false until the first decision seeded the history */
	PolicySample recs[POLICY_HISTORY_MAX]; /* unstabilized recommendations, oldest first */
	size_t n_recs;
	PolicySample events[POLICY_HISTORY_MAX]; /* scale changes: value = +added / -removed */
	size_t n_events;
	double last_active; /* last time depth > activation (seeded with the first decision) */
	unsigned failures;  /* consecutive unknown readings */
} PolicyState;

typedef struct {
	bool valid;   /* false: failed, missing, garbled or implausible */
	double depth; /* messages, when valid */
} Reading;

typedef struct {
	int desired;        /* what the pool should have now */
	int recommendation; /* before stabilization and step limits (ceil(depth/target), ...) */
	double ratio;       /* depth / (target * current); 0 when current == 0 or unknown */
	bool active;        /* depth > activation */
	Guard guard;        /* the guard that shaped desired (GUARD_NONE if none) */
} Decision;

void policy_state_init(PolicyState *s);

/* Decide the desired worker count. CURRENT is the pool's capacity (running + starting, never
 * draining). Updates S (history, failures, last_active, scale events when desired != current).
 * NOW is a monotonic time in seconds. */
Decision policy_decide(const PoolConfig *p, PolicyState *s, Reading r, int current, double now);
