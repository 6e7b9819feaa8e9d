/* SPDX-License-Identifier: MIT */
/* Per-pool reconcile: what the pool's containers are (observed from Docker, plus the operations
 * sluice has in flight) and what to do about them, given the desired count from the policy.
 *
 * pool_observe() and pool_plan() are pure: they classify containers and return actions; the
 * manager executes the actions through the Docker client. Everything here can be rebuilt from
 * Docker after a restart: ownership from labels, the spec from io.sluice.spec, a drain from the
 * container's name (sluice-<pool>-<index>-draining-<unix time>), a slot from its index. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "docker.h"
#include "policy.h"
#include "status.h"

/* A worker that has been running for less than this still counts as starting: it is not yet
 * consuming (Celery needs ~2 s to connect), so it is the first choice of victim. */
#define POOL_WARMUP_SEC 5.0
/* A worker that exits on its own within this time of its creation counts as a crash for the
 * exponential back-off; one that lived longer resets the back-off. */
#define POOL_CRASH_WINDOW_SEC 60.0
#define POOL_BACKOFF_MIN_SEC 2.0
#define POOL_BACKOFF_MAX_SEC 300.0
/* A draining worker still running this long after its grace ran out never got its stop (sluiced
 * died between rename and stop): it is stopped again, with the full grace. */
#define POOL_RESTOP_MARGIN_SEC 60.0

typedef enum {
	WORKER_STARTING, /* created, start in flight, or running for < POOL_WARMUP_SEC */
	WORKER_RUNNING,
	WORKER_DRAINING, /* stop sent (or about to be): never capacity, never stopped twice */
	WORKER_EXITED,   /* exited or dead: to be removed */
	WORKER_OTHER,    /* removing, paused, ...: counted as nothing, left alone */
} WorkerState;

typedef struct {
	const char *id; /* NULL for a create still in flight */
	const char *name;
	unsigned index;
	bool fresh;      /* io.sluice.spec equals the pool's current spec hash */
	bool created_only; /* Docker state "created": never started */
	WorkerState state;
	double created;     /* wall-clock */
	double drain_since; /* wall-clock, for WORKER_DRAINING (from the name); 0 unknown */
	bool busy;          /* an operation on it is in flight */
	bool drained;       /* its drain was started (by name or in flight): not a crash */
	int exit_code;
} Worker;

typedef struct {
	Worker *workers;
	size_t n;
	int running, starting, draining, exited;
	int fresh, outdated; /* capacity (running + starting) by spec */
	/* Slots whose name is held by a container sluice does not own (a create got 409):
	 * never planned. Set by the caller after pool_observe(); borrowed. */
	const unsigned *reserved;
	size_t n_reserved;
} PoolView;

typedef enum {
	ACTION_CREATE, /* create + start a new worker with NAME/INDEX */
	ACTION_START,  /* start a created-but-never-started worker */
	ACTION_DRAIN,  /* rename to the draining name, then stop with the grace */
	ACTION_REMOVE, /* remove an exited worker, or a never-started one being scaled away */
	ACTION_RESTOP, /* stop a draining worker again (its stop never arrived) */
} ActionKind;

typedef struct {
	ActionKind kind;
	const char *id; /* borrowed from the view; NULL for CREATE */
	char name[128];
	unsigned index;
	bool crashed; /* REMOVE of a worker that exited on its own */
	bool early;   /* ... within POOL_CRASH_WINDOW_SEC of its creation */
} Action;

typedef struct {
	Action *actions;
	size_t n;
	int to_create, to_drain; /* counts, for logs */
	bool rolling;            /* a spec change is being rolled out */
	bool backoff;            /* creates withheld by the crash back-off */
} Plan;

/* Name of the container for slot INDEX of POOL: "sluice-<pool>-<index>". */
void pool_container_name(char *buf, size_t size, const char *pool, unsigned index);
/* The name a draining container is renamed to, stamped with the time the drain began. */
void pool_draining_name(char *buf, size_t size, const char *pool, unsigned index, double now);
/* Parse a name of this pool: its index, and whether (and since when) it is draining.
 * Returns 0, or -EINVAL if NAME is not one of the pool's names. */
int pool_parse_name(const char *name, const char *pool, unsigned *ret_index, bool *ret_draining,
		    double *ret_since);

/* In-flight knowledge the manager passes to pool_observe(). */
typedef struct {
	const char *name; /* create in flight: not yet listed */
	unsigned index;
} PendingCreate;

/* Classify the Docker containers that belong to pool P (label io.sluice.managed=true and
 * io.sluice.pool=P->name; others are skipped) plus creates still in flight. BUSY_IDS are ids
 * with an operation in flight; DRAINING_IDS are ids whose drain was started but whose rename may
 * not be listed yet. The view borrows strings from its inputs. NOW is wall-clock. */
int pool_observe(const PoolConfig *p, const DockerContainer *list, size_t n,
		 const PendingCreate *pending, size_t n_pending, char *const *busy_ids,
		 size_t n_busy, char *const *draining_ids, size_t n_draining, double now,
		 PoolView *ret);
void pool_view_free(PoolView *v);

/* Decide the actions that bring the pool's view to DESIRED workers: remove exited workers,
 * start never-started ones, create fresh workers up to DESIRED (unless IN_BACKOFF), drain the
 * surplus (victims: never started, then starting, then outdated, then newest), and roll out a
 * spec change one worker at a time (one fresh worker up first, then one outdated drained).
 * Pure. */
int pool_plan(const PoolConfig *p, const PoolView *v, int desired, bool in_backoff, double now,
	      Plan *ret);
void plan_free(Plan *plan);

/* The back-off after N consecutive early crashes: 2 s, 4 s, 8 s, ... capped at 300 s. */
double pool_backoff_delay(unsigned crashes);
