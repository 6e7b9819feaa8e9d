/* SPDX-License-Identifier: MIT */
/* The status snapshot: what sluiced knows after each tick, per pool. The manager fills a
 * Status and calls status_write(), which replaces $RUNTIME_DIRECTORY/status.json atomically
 * (write to a temp file, rename). sluicectl reads it back with status_read() and prints it;
 * the metrics endpoint serves status_render_prometheus() of the same snapshot. Pure apart from
 * the file I/O in status_write()/status_read(). Contains no secrets by construction. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "policy.h"

typedef enum {
	ERRKIND_HTTP,    /* non-2xx from the management API */
	ERRKIND_TIMEOUT, /* request timed out */
	ERRKIND_CONNECT, /* connection refused / socket missing */
	ERRKIND_PARSE,   /* garbled JSON */
	ERRKIND_ABSENT,  /* queue missing, down or without statistics */
	ERRKIND_DOCKER,  /* a Docker call failed */
	ERRKIND_CRASH,   /* a worker exited on its own */
	_ERRKIND_MAX,
} ErrKind;

const char *errkind_to_string(ErrKind k);

typedef struct {
	char *name;
	char *source; /* "management" or "amqp" */
	char *queues; /* comma-separated, for display */
	bool depth_valid;
	double depth;      /* valid only if depth_valid */
	double depth_time; /* wall-clock Unix time of the last valid reading; 0 = never */
	char *depth_error; /* why the last reading was unknown, or NULL */
	int running, starting, draining;
	int desired, min, max;
	double target, activation;
	Decision decision; /* the policy's last decision (recommendation, ratio, guard) */
	Guard guard;       /* the guard holding the pool back (policy's, or GUARD_BACKOFF) */
	char *guard_detail; /* human explanation of the guard, or NULL */
	char *last_action;  /* e.g. "scale up 2 -> 4", or NULL */
	double last_action_time; /* wall-clock; 0 = never */
	unsigned failures;       /* consecutive unknown readings */
	double backoff_until;    /* wall-clock; 0 = no backoff */
	uint64_t scale_up_total, scale_down_total; /* workers started / drained */
	uint64_t errors[_ERRKIND_MAX];
	double poll_latency; /* seconds of the last depth request */
} PoolStatus;

typedef struct {
	double time; /* wall-clock Unix time of the snapshot */
	char *version;
	double interval;
	bool dry_run;
	uint64_t requests_last_tick; /* HTTP requests made in the last tick */
	double loop_latency;         /* tick drift from its schedule, seconds */
	PoolStatus *pools;
	size_t n_pools;
} Status;

void pool_status_clear(PoolStatus *p);
Status *status_free(Status *s);

/* Serialise to JSON (caller frees) / parse back. */
char *status_to_json(const Status *s);
int status_from_json(const char *json, Status **ret);

/* Atomically replace DIR/status.json. Returns 0 or -errno. */
int status_write(const Status *s, const char *dir);
/* Read DIR/status.json. Returns 0, -ENOENT (sluiced not running / no tick yet) or -errno. */
int status_read(const char *dir, Status **ret);

/* `sluicectl status`: one row per pool (depth and its age, source, running/starting/draining,
 * desired, min/max, last action and its age, guard). NOW is wall-clock. */
void status_print_table(const Status *s, double now, FILE *f);
/* `sluicectl explain POOL`: inputs -> recommendation -> guards -> action. -ENOENT if absent. */
int status_print_explain(const Status *s, const char *pool, double now, FILE *f);

/* Prometheus text exposition of the snapshot (caller frees). Metric names in docs/metrics.md. */
char *status_render_prometheus(const Status *s);
