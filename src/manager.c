/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "amqp.h"
#include "config.h"
#include "docker.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "metrics.h"
#include "policy.h"
#include "pool.h"
#include "rabbitmq.h"
#include "status.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

/* While a pool's depth stays unknown for the same reason, its warning is repeated this often. */
#define UNKNOWN_REPEAT_SEC 300.0

typedef struct {
	char *name;
	unsigned index;
	double done_at; /* monotonic; 0 while the create/start is in flight */
} Pending;

/* Runtime state of one pool. Survives reloads (matched by name); everything in it can be lost
 * on a restart without harm: Docker gives the containers back, the policy re-seeds. */
typedef struct {
	char *name;
	const PoolConfig *cfg; /* into Manager.config */
	PolicyState policy;
	int prev_desired; /* the policy's last output; -1 = none yet (use the observed count) */
	Pending *pending;
	size_t n_pending;
	char **busy; /* container ids with an operation in flight */
	size_t n_busy;
	char **draining; /* ids whose drain began (until the operation ends) */
	size_t n_draining;
	unsigned *reserved; /* slots whose name a foreign container holds (create got 409) */
	double *reserved_until; /* wall-clock */
	size_t n_reserved;
	unsigned crashes; /* consecutive early crashes */
	double backoff_until; /* wall-clock */

	/* This tick's reading. */
	Reading reading;
	char *reading_error;
	ErrKind reading_errkind;
	double poll_latency;
	double depth_time; /* wall-clock of the last valid reading */
	double last_depth;

	char *unknown_logged;      /* the last "depth unknown" line logged, while it lasts */
	double unknown_logged_at;  /* monotonic */

	PoolStatus st; /* counters and last action persist across ticks */
} Pool;

/* One depth request of a tick: a source and a vhost, covering every pool reading from it. */
typedef struct {
	struct Manager *m;
	SourceKind source;
	char *vhost;
	char **queues;
	size_t n_queues;
	int r;
	char *error;
	QueueDepth *results;
	size_t n_results;
	double started, latency;
} Query;

struct Manager {
	ManagerOptions opts;
	Config *config;
	sd_event *event;
	sd_event_source *tick_timer;
	Http *http;
	Docker *docker;
	Rabbit *rabbit;
	Amqp *amqp;
	Metrics *metrics;
	char *runtime_dir;

	Pool **pools;
	size_t n_pools;

	/* The tick in progress. */
	bool tick_running;
	Query *queries;
	size_t n_queries;
	unsigned outstanding;
	int list_r;
	char *list_error;
	DockerContainer *list;
	size_t n_list;
	double list_started; /* monotonic */
	uint64_t requests_at_tick;
	uint64_t requests_last_tick;
	bool ticked;         /* the first tick has started (--once runs just that one) */
	double loop_latency; /* how late the last tick fired, seconds */

	unsigned ops; /* Docker operations in flight */
	bool ready_sent;
	bool reload_pending;
	bool once_done;
	bool docker_down_logged;
};

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- small sets of strings ------------------------------------------------------------- */

static int strv_add(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

static void strv_del(char **v, size_t *n, const char *s)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(v[i], s) == 0) {
			free(v[i]);
			v[i] = v[--*n];
			return;
		}
}

/* --- pools ----------------------------------------------------------------------------- */

static Pool *pool_free(Pool *p)
{
	if (!p)
		return NULL;
	free(p->name);
	for (size_t i = 0; i < p->n_pending; i++)
		free(p->pending[i].name);
	free(p->pending);
	strv_free_n(p->busy, p->n_busy);
	strv_free_n(p->draining, p->n_draining);
	free(p->reserved);
	free(p->reserved_until);
	free(p->reading_error);
	free(p->unknown_logged);
	pool_status_clear(&p->st);
	free(p);
	return NULL;
}

static Pool *pool_new(const PoolConfig *cfg)
{
	Pool *p = calloc(1, sizeof(Pool));
	if (!p || !(p->name = strdup(cfg->name)))
		return pool_free(p);
	p->cfg = cfg;
	p->prev_desired = -1;
	policy_state_init(&p->policy);
	return p;
}

static Pool *manager_find_pool(Manager *m, const char *name)
{
	for (size_t i = 0; i < m->n_pools; i++)
		if (strcmp(m->pools[i]->name, name) == 0)
			return m->pools[i];
	return NULL;
}

static void pending_remove(Pool *p, const char *name)
{
	for (size_t i = 0; i < p->n_pending; i++)
		if (strcmp(p->pending[i].name, name) == 0) {
			free(p->pending[i].name);
			p->pending[i] = p->pending[--p->n_pending];
			return;
		}
}

static void pending_done(Pool *p, const char *name, double mono)
{
	for (size_t i = 0; i < p->n_pending; i++)
		if (strcmp(p->pending[i].name, name) == 0)
			p->pending[i].done_at = mono;
}

/* A finished create is forgotten once a container list taken after it has been seen. */
static void pending_prune(Pool *p, double list_started)
{
	for (size_t i = 0; i < p->n_pending;)
		if (p->pending[i].done_at > 0 && p->pending[i].done_at < list_started) {
			free(p->pending[i].name);
			p->pending[i] = p->pending[--p->n_pending];
		} else
			i++;
}

/* How long a slot stays skipped after its name turned out to be taken by a foreign container. */
#define RESERVE_SEC 600.0

static void pool_reserve(Pool *p, unsigned index, double until)
{
	for (size_t i = 0; i < p->n_reserved; i++)
		if (p->reserved[i] == index) {
			p->reserved_until[i] = until;
			return;
		}
	unsigned *r = realloc(p->reserved, (p->n_reserved + 1) * sizeof(unsigned));
	if (!r)
		return;
	p->reserved = r;
	double *u = realloc(p->reserved_until, (p->n_reserved + 1) * sizeof(double));
	if (!u)
		return;
	p->reserved_until = u;
	p->reserved[p->n_reserved] = index;
	p->reserved_until[p->n_reserved++] = until;
}

static void pool_reserve_prune(Pool *p, double wall)
{
	for (size_t i = 0; i < p->n_reserved;)
		if (p->reserved_until[i] <= wall) {
			p->reserved[i] = p->reserved[--p->n_reserved];
			p->reserved_until[i] = p->reserved_until[p->n_reserved];
		} else
			i++;
}

static void pool_set_action(Pool *p, const char *fmt, ...) _printf_(2, 3);
static void pool_set_action(Pool *p, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	free(p->st.last_action);
	p->st.last_action = strdup(buf);
	p->st.last_action_time = now_wall();
}

/* --- Docker operations ------------------------------------------------------------------ */

typedef struct {
	Manager *m;
	char *pool;
	ActionKind kind;
	char *id;
	char *name; /* target name (create: the name; drain: the draining name) */
	unsigned index;
	bool crashed, early;
	char *signal;
	double timeout;
	double started;
} Op;

static void op_free(Op *op)
{
	if (!op)
		return;
	free(op->pool);
	free(op->id);
	free(op->name);
	free(op->signal);
	free(op);
}

static void manager_maybe_finish_once(Manager *m);

/* An operation is over (either way): release its container and count it out. */
static void op_end(Op *op)
{
	Manager *m = op->m;
	Pool *p = manager_find_pool(m, op->pool);
	if (p && op->id) {
		strv_del(p->busy, &p->n_busy, op->id);
		strv_del(p->draining, &p->n_draining, op->id);
	}
	if (p && op->kind == ACTION_CREATE && op->name)
		pending_done(p, op->name, now_mono());
	m->ops--;
	op_free(op);
	manager_maybe_finish_once(m);
}

static void op_fail(Op *op, const char *what, const char *error)
{
	Pool *p = manager_find_pool(op->m, op->pool);
	if (p)
		p->st.errors[ERRKIND_DOCKER]++;
	LogFields f = {.pool = op->pool, .depth = -1, .desired = -1, .current = -1, .action = what};
	log_pool(LOG_WARNING, &f, "%s: %s %s failed: %s; retrying next tick", op->pool, what,
		 op->name ? op->name : op->id, error ? error : "unknown error");
}

/* Ownership, re-checked right before acting: both labels, as Docker reports them now. */
static bool op_owns(Op *op, const DockerContainer *c)
{
	return c->managed && c->pool && strcmp(c->pool, op->pool) == 0;
}

static void on_start_done(int r, const char *error, void *userdata)
{
	Op *op = userdata;
	if (r < 0)
		op_fail(op, "start", error);
	op_end(op);
}

static void on_create_done(int r, const char *error, const char *id, void *userdata)
{
	Op *op = userdata;
	Pool *p = manager_find_pool(op->m, op->pool);

	if (r < 0) {
		if (p) {
			pending_remove(p, op->name);
			/* A create that fails (image missing, bad spec) is treated like a worker
			 * that died at once: it backs off instead of retrying every tick. */
			if (r != -EEXIST) {
				p->crashes++;
				p->backoff_until = now_wall() + pool_backoff_delay(p->crashes);
			}
		}
		if (r == -EEXIST) {
			/* Ours would have been listed (and adopted); this name is held by a
			 * container without our labels. Skip its slot for a while. */
			if (p)
				pool_reserve(p, op->index, now_wall() + RESERVE_SEC);
			log_warning("%s: the name %s is taken by a container sluice does not own; "
				    "skipping slot %u for %.0f s",
				    op->pool, op->name, op->index, RESERVE_SEC);
		} else
			op_fail(op, "create", error);
		free(op->name);
		op->name = NULL;
		op_end(op);
		return;
	}
	op->id = strdup(id);
	if (p && op->id)
		strv_add(&p->busy, &p->n_busy, op->id);
	r = docker_start(op->m->docker, op->id, on_start_done, op);
	if (r < 0) {
		op_fail(op, "start", strerror(-r));
		op_end(op);
	}
}

static void on_stop_done(int r, const char *error, void *userdata)
{
	Op *op = userdata;
	if (r < 0 && r != -ENOENT)
		op_fail(op, "stop", error);
	else
		log_info("%s: %s stopped after %.1f s", op->pool, op->name ? op->name : op->id,
			 now_mono() - op->started);
	op_end(op);
}

static void op_stop(Op *op)
{
	int r = docker_stop(op->m->docker, op->id, op->signal, op->timeout, on_stop_done, op);
	if (r < 0) {
		op_fail(op, "stop", strerror(-r));
		op_end(op);
	}
}

static void on_rename_done(int r, const char *error, void *userdata)
{
	Op *op = userdata;
	if (r < 0) {
		op_fail(op, "drain (rename)", error);
		op_end(op);
		return;
	}
	op_stop(op);
}

static void on_remove_done(int r, const char *error, void *userdata)
{
	Op *op = userdata;
	if (r < 0 && r != -ENOENT)
		op_fail(op, "remove", error);
	op_end(op);
}

static void on_inspect_done(int r, const char *error, const DockerContainer *c, void *userdata)
{
	Op *op = userdata;
	Manager *m = op->m;

	if (r == -ENOENT) { /* gone already: nothing to do */
		op_end(op);
		return;
	}
	if (r < 0) {
		op_fail(op, "inspect", error);
		op_end(op);
		return;
	}
	if (!op_owns(op, c)) {
		log_error("%s: refusing to touch container %s (%s): it does not carry "
			  LABEL_MANAGED "=true and " LABEL_POOL "=%s",
			  op->pool, c->name ? c->name : "?", op->id, op->pool);
		op_end(op);
		return;
	}

	const char *state = c->state ? c->state : "";
	switch (op->kind) {
	case ACTION_DRAIN:
		if (strcmp(state, "running") != 0 && strcmp(state, "paused") != 0) {
			op_end(op); /* exited meanwhile: the next tick removes it */
			return;
		}
		r = docker_rename(m->docker, op->id, op->name, on_rename_done, op);
		break;
	case ACTION_RESTOP:
		op_stop(op);
		return;
	case ACTION_START:
		if (strcmp(state, "created") != 0) {
			op_end(op);
			return;
		}
		r = docker_start(m->docker, op->id, on_start_done, op);
		break;
	case ACTION_REMOVE:
		/* Only what cannot be running: exited, dead, or never started. */
		if (strcmp(state, "exited") != 0 && strcmp(state, "dead") != 0 &&
		    strcmp(state, "created") != 0) {
			op_end(op);
			return;
		}
		if (op->crashed)
			log_info("%s: removed %s, which exited on its own (exit code %d)", op->pool,
				 c->name ? c->name : op->id, c->exit_code);
		else if (c->exit_code == 137)
			log_warning("%s: drained worker %s was killed when its grace ran out (exit "
				    "137); raise stop_timeout above the longest task",
				    op->pool, c->name ? c->name : op->id);
		else
			log_info("%s: removed %s (exit code %d)", op->pool,
				 c->name ? c->name : op->id, c->exit_code);
		r = docker_remove(m->docker, op->id, on_remove_done, op);
		break;
	default:
		r = -EINVAL;
	}
	if (r < 0) {
		op_fail(op, "request", strerror(-r));
		op_end(op);
	}
}

static int pool_execute(Manager *m, Pool *p, const Action *a)
{
	const PoolConfig *cfg = p->cfg;
	Op *op = calloc(1, sizeof(Op));
	if (!op)
		return -ENOMEM;
	op->m = m;
	op->kind = a->kind;
	op->index = a->index;
	op->crashed = a->crashed;
	op->early = a->early;
	op->timeout = cfg->stop_timeout;
	op->started = now_mono();
	op->pool = strdup(p->name);
	op->signal = strdup(cfg->stop_signal);
	op->name = a->name[0] ? strdup(a->name) : NULL;
	if (a->id)
		op->id = strdup(a->id);
	if (!op->pool || !op->signal || (a->id && !op->id)) {
		op_free(op);
		return -ENOMEM;
	}
	m->ops++;

	int r;
	if (a->kind == ACTION_CREATE) {
		Pending *np = realloc(p->pending, (p->n_pending + 1) * sizeof(Pending));
		if (!np) {
			m->ops--;
			op_free(op);
			return -ENOMEM;
		}
		p->pending = np;
		p->pending[p->n_pending++] = (Pending){.name = strdup(a->name), .index = a->index};
		r = docker_create(m->docker, cfg, a->name, a->index, on_create_done, op);
		if (r < 0) {
			pending_remove(p, a->name);
			op_fail(op, "create", strerror(-r));
			free(op->name);
			op->name = NULL;
			op_end(op);
		}
		return 0;
	}

	strv_add(&p->busy, &p->n_busy, a->id);
	if (a->kind == ACTION_DRAIN)
		strv_add(&p->draining, &p->n_draining, a->id);
	r = docker_inspect(m->docker, a->id, on_inspect_done, op);
	if (r < 0) {
		op_fail(op, "inspect", strerror(-r));
		op_end(op);
	}
	return 0;
}

/* --- the tick --------------------------------------------------------------------------- */

static void query_clear(Query *q)
{
	free(q->vhost);
	strv_free_n(q->queues, q->n_queues);
	free(q->error);
	queue_depths_free(q->results, q->n_results);
	*q = (Query){0};
}

static void tick_clear(Manager *m)
{
	for (size_t i = 0; i < m->n_queries; i++)
		query_clear(&m->queries[i]);
	free(m->queries);
	m->queries = NULL;
	m->n_queries = 0;
	docker_containers_free(m->list, m->n_list);
	m->list = NULL;
	m->n_list = 0;
	free(m->list_error);
	m->list_error = NULL;
	m->tick_running = false;
}

static ErrKind errkind_from_r(int r)
{
	switch (r) {
	case -ETIMEDOUT:
		return ERRKIND_TIMEOUT;
	case -ECONNREFUSED:
	case -ENOENT:
		return ERRKIND_CONNECT;
	case -EBADMSG:
	case -EINVAL:
		return ERRKIND_PARSE;
	default:
		return ERRKIND_HTTP;
	}
}

/* Sum the pool's queues from this tick's answers. Any unknown queue makes the reading unknown:
 * a partial sum would look like a smaller backlog. */
static void pool_read(Manager *m, Pool *p)
{
	const PoolConfig *cfg = p->cfg;
	double depth = 0;

	free(p->reading_error);
	p->reading_error = NULL;
	p->reading = (Reading){.valid = false};

	for (size_t qi = 0; qi < cfg->n_queues; qi++) {
		const Query *q = NULL;
		for (size_t i = 0; i < m->n_queries; i++)
			if (m->queries[i].source == cfg->source &&
			    strcmp(m->queries[i].vhost, cfg->vhost) == 0)
				q = &m->queries[i];
		if (!q)
			return;
		p->poll_latency = q->latency;
		if (q->r < 0) {
			p->reading_errkind = errkind_from_r(q->r);
			p->reading_error = strdup(q->error ? q->error : strerror(-q->r));
			return;
		}
		const QueueDepth *d = NULL;
		for (size_t i = 0; i < q->n_results; i++)
			if (q->results[i].name && strcmp(q->results[i].name, cfg->queues[qi]) == 0)
				d = &q->results[i];
		if (!d || !d->valid) {
			char buf[256];
			snprintf(buf, sizeof buf, "queue %s: %s", cfg->queues[qi],
				 d && d->why ? d->why : "absent");
			p->reading_errkind = ERRKIND_ABSENT;
			p->reading_error = strdup(buf);
			return;
		}
		depth += (double)d->ready;
		if (cfg->count == COUNT_READY_UNACKED)
			depth += (double)d->unacked;
	}
	p->reading = (Reading){.valid = true, .depth = depth};
	p->depth_time = now_wall();
	p->last_depth = depth;
}

static void pool_status_fill(Pool *p, const PoolView *v, const Decision *d, Guard guard)
{
	const PoolConfig *cfg = p->cfg;
	PoolStatus *st = &p->st;

	free(st->name);
	st->name = strdup(cfg->name);
	free(st->source);
	st->source = strdup(source_kind_to_string(cfg->source));
	free(st->queues);
	size_t len = 1;
	for (size_t i = 0; i < cfg->n_queues; i++)
		len += strlen(cfg->queues[i]) + 1;
	st->queues = calloc(1, len);
	for (size_t i = 0; st->queues && i < cfg->n_queues; i++) {
		if (i)
			strcat(st->queues, ",");
		strcat(st->queues, cfg->queues[i]);
	}
	st->depth_valid = p->reading.valid;
	st->depth = p->reading.valid ? p->reading.depth : p->last_depth;
	st->depth_time = p->depth_time;
	free(st->depth_error);
	st->depth_error = p->reading_error ? strdup(p->reading_error) : NULL;
	if (v) {
		st->running = v->running;
		st->starting = v->starting;
		st->draining = v->draining;
	}
	st->desired = d ? d->desired : p->prev_desired;
	st->min = cfg->min;
	st->max = cfg->max;
	st->target = cfg->target;
	st->activation = cfg->activation;
	if (d)
		st->decision = *d;
	st->guard = guard;
	st->failures = p->policy.failures;
	st->backoff_until = p->backoff_until > now_wall() ? p->backoff_until : 0;
	st->poll_latency = p->poll_latency;
}

static const char *guard_detail(const Pool *p, const Decision *d, Guard g, char *buf, size_t n)
{
	const PoolConfig *c = p->cfg;
	switch (g) {
	case GUARD_TOLERANCE:
		snprintf(buf, n, "depth/(target x current) = %.2f is within 10%% of 1", d->ratio);
		break;
	case GUARD_ACTIVATION:
		snprintf(buf, n, "pool at zero wakes only when depth > activation (%g)",
			 c->activation);
		break;
	case GUARD_COOLDOWN:
		snprintf(buf, n, "no backlog, but going to zero needs %g s without one",
			 c->cooldown);
		break;
	case GUARD_STABILIZATION:
		snprintf(buf, n, "held by the stabilization window (up %g s: lowest, down %g s: "
				 "highest recommendation)",
			 c->up.stabilization, c->down.stabilization);
		break;
	case GUARD_STEP_LIMIT:
		snprintf(buf, n, "at most %d up per %g s, %d down per %g s", c->up.max_step,
			 c->up.period, c->down.max_step, c->down.period);
		break;
	case GUARD_MIN:
		snprintf(buf, n, "clamped to min %d", c->min);
		break;
	case GUARD_MAX:
		snprintf(buf, n, "clamped to max %d", c->max);
		break;
	case GUARD_ERROR_HOLD:
		snprintf(buf, n, "depth unknown (%u in a row: %s): size held",
			 p->policy.failures, p->reading_error ? p->reading_error : "?");
		break;
	case GUARD_FALLBACK:
		snprintf(buf, n, "depth unknown %u times in a row: moving to fallback %d",
			 p->policy.failures, c->fallback);
		break;
	case GUARD_BACKOFF:
		snprintf(buf, n, "workers keep dying soon after start (%u in a row): no new ones "
				 "for %.0f s",
			 p->crashes, p->backoff_until - now_wall());
		break;
	default:
		return NULL;
	}
	return buf;
}

/* Workers that exited on their own: within the crash window they count towards the back-off.
 * Done before the plan, so that the replacement of a worker that just died is already held. */
static void pool_account_crashes(Pool *p, const PoolView *view, double wall)
{
	for (size_t i = 0; i < view->n; i++) {
		const Worker *w = &view->workers[i];
		if (w->state != WORKER_EXITED || w->busy || w->drained)
			continue;
		p->st.errors[ERRKIND_CRASH]++;
		if (wall - w->created >= POOL_CRASH_WINDOW_SEC) {
			p->crashes = 0;
			continue;
		}
		p->crashes++;
		double delay = pool_backoff_delay(p->crashes);
		p->backoff_until = wall + delay;
		log_pool(LOG_WARNING,
			 &(LogFields){.pool = p->name, .depth = -1, .desired = -1, .current = -1,
				      .action = "backoff"},
			 "%s: worker %s exited with code %d within %.0f s of its start (%u in a row); "
			 "backing off %.0f s before starting another",
			 p->name, w->name ? w->name : w->id, w->exit_code, wall - w->created,
			 p->crashes, delay);
	}

	/* A fresh worker that has lived past the crash window proves the spec works. */
	if (p->backoff_until <= wall && p->crashes > 0)
		for (size_t i = 0; i < view->n; i++)
			if (view->workers[i].state == WORKER_RUNNING && view->workers[i].fresh &&
			    wall - view->workers[i].created > POOL_CRASH_WINDOW_SEC)
				p->crashes = 0;
}

/* An unknown depth is logged when it starts, when its kind or the action changes, and then
 * every few minutes, not every tick: the journal must stay readable. */
static void pool_log_reading(Pool *p, const LogFields *f, const Decision *d, double mono)
{
	if (p->reading.valid) {
		if (p->unknown_logged)
			log_pool(LOG_NOTICE, f, "%s: depth readable again (%.0f)", p->name,
				 p->reading.depth);
		free(p->unknown_logged);
		p->unknown_logged = NULL;
		return;
	}
	/* Same kind of error, same action: a repeat (a timeout's text changes each time). */
	char key[64];
	snprintf(key, sizeof key, "%d/%d/%d", (int)p->reading_errkind, (int)d->guard, d->desired);
	bool repeat = p->unknown_logged && strcmp(p->unknown_logged, key) == 0 &&
		      mono - p->unknown_logged_at < UNKNOWN_REPEAT_SEC;
	log_pool(repeat ? LOG_DEBUG : LOG_WARNING, f, "%s: depth unknown (%s); %s %d workers",
		 p->name, p->reading_error ? p->reading_error : "no reading",
		 d->guard == GUARD_FALLBACK ? "fallback to" : "holding", d->desired);
	if (!repeat) {
		free(p->unknown_logged);
		p->unknown_logged = strdup(key);
		p->unknown_logged_at = mono;
	}
}

/* One line per decision that changes something, with the guard that shaped it. */
static void pool_log_plan(Manager *m, Pool *p, LogFields *f, const Decision *d, int current,
			  int capacity, const Plan *plan, Guard guard, const char *gd)
{
	char depth_s[32] = "?";
	if (p->reading.valid)
		snprintf(depth_s, sizeof depth_s, "%.0f", p->reading.depth);

	if (plan->to_create == 0 && plan->to_drain == 0) {
		/* A back-off was said when it began. */
		log_debug("%s: depth %s, current %d, desired %d, guard %s", p->name, depth_s,
			  capacity, d->desired, guard_to_string(guard));
		return;
	}
	const char *dir = plan->to_create > plan->to_drain ? "scale up" : "scale down";
	if (plan->rolling && d->desired == capacity)
		dir = "roll";
	else if (d->desired == current && plan->to_create > 0 && plan->to_drain == 0)
		dir = "replace"; /* dead workers, not a new decision */
	f->action = dir;
	int after = capacity + plan->to_create - plan->to_drain;
	log_pool(LOG_INFO, f, "%s%s: %s %d -> %d (depth %s, target %g, desired %d%s%s)",
		 m->opts.dry_run ? "dry-run: would " : "", p->name, dir, capacity, after, depth_s,
		 p->cfg->target, d->desired, gd ? "; " : "", gd ? gd : "");
	pool_set_action(p, "%s%s %d -> %d", m->opts.dry_run ? "would " : "", dir, capacity, after);
	if (!m->opts.dry_run) {
		p->st.scale_up_total += (uint64_t)plan->to_create;
		p->st.scale_down_total += (uint64_t)plan->to_drain;
	}
}

static void pool_run_plan(Manager *m, Pool *p, const Plan *plan)
{
	static const char *const verbs[] = {"create", "start", "drain", "remove", "stop again"};

	for (size_t i = 0; i < plan->n; i++) {
		const Action *a = &plan->actions[i];
		if (m->opts.dry_run) {
			log_info("dry-run: %s: would %s %s", p->name, verbs[a->kind], a->name);
			continue;
		}
		if (a->kind == ACTION_RESTOP)
			log_warning("%s: %s is still running %.0f s after its drain began; stopping "
				    "it again with the full grace",
				    p->name, a->name, p->cfg->stop_timeout + POOL_RESTOP_MARGIN_SEC);
		int r = pool_execute(m, p, a);
		if (r < 0)
			log_error("%s: cannot %s %s: %s", p->name, verbs[a->kind], a->name,
				  strerror(-r));
	}
}

/* One pool's share of a tick: reading -> observe -> policy -> plan -> actions -> status. */
static void pool_tick(Manager *m, Pool *p)
{
	const PoolConfig *cfg = p->cfg;
	double wall = now_wall(), mono = now_mono();
	int r;

	pool_read(m, p);
	if (!p->reading.valid)
		p->st.errors[p->reading_errkind]++;

	if (m->list_r < 0) {
		/* Without the container list nothing can be decided safely: hold. */
		pool_status_fill(p, NULL, NULL, GUARD_ERROR_HOLD);
		return;
	}
	pending_prune(p, m->list_started);

	_cleanup_(pool_view_free) PoolView view = {0};
	PendingCreate *pc = calloc(p->n_pending + 1, sizeof(PendingCreate));
	if (!pc)
		return;
	for (size_t i = 0; i < p->n_pending; i++)
		pc[i] = (PendingCreate){.name = p->pending[i].name, .index = p->pending[i].index};
	r = pool_observe(cfg, m->list, m->n_list, pc, p->n_pending, p->busy, p->n_busy,
			 p->draining, p->n_draining, wall, &view);
	free(pc);
	if (r < 0)
		return;
	pool_reserve_prune(p, wall);
	view.reserved = p->reserved;
	view.n_reserved = p->n_reserved;

	int capacity = view.running + view.starting;
	int current = p->prev_desired >= 0 ? p->prev_desired : capacity;
	Decision d = policy_decide(cfg, &p->policy, p->reading, current, mono);
	p->prev_desired = d.desired;

	pool_account_crashes(p, &view, wall);

	_cleanup_(plan_free) Plan plan = {0};
	r = pool_plan(cfg, &view, d.desired, p->backoff_until > wall, wall, &plan);
	if (r < 0) {
		log_error("%s: cannot plan: %s", p->name, strerror(-r));
		return;
	}
	Guard guard = plan.backoff ? GUARD_BACKOFF : d.guard;
	char detail[256];
	const char *gd = guard_detail(p, &d, guard, detail, sizeof detail);
	free(p->st.guard_detail);
	p->st.guard_detail = gd ? strdup(gd) : NULL;

	LogFields f = {.pool = p->name,
		       .depth = p->reading.valid ? p->reading.depth : -1,
		       .desired = d.desired,
		       .current = capacity};
	pool_log_reading(p, &f, &d, mono);
	pool_log_plan(m, p, &f, &d, current, capacity, &plan, guard, gd);
	pool_run_plan(m, p, &plan);

	pool_status_fill(p, &view, &d, guard);
	/* What Docker will hold once the actions are through, for STATUS= and the table. */
	if (!m->opts.dry_run)
		p->st.starting += plan.to_create;
}

static void manager_publish_status(Manager *m)
{
	Status s = {
		.time = now_wall(),
		.version = (char *)PACKAGE_VERSION,
		.interval = m->config->interval,
		.dry_run = m->opts.dry_run,
		.requests_last_tick = m->requests_last_tick,
		.loop_latency = m->loop_latency,
		.n_pools = m->n_pools,
	};
	PoolStatus *ps = calloc(m->n_pools + 1, sizeof(PoolStatus));
	if (!ps)
		return;
	for (size_t i = 0; i < m->n_pools; i++)
		ps[i] = m->pools[i]->st; /* shallow: borrowed for serialisation */
	s.pools = ps;

	int r = status_write(&s, m->runtime_dir);
	if (r < 0)
		log_warning("cannot write %s/status.json: %s", m->runtime_dir, strerror(-r));
	if (m->metrics) {
		_cleanup_free_ char *text = status_render_prometheus(&s);
		if (text)
			metrics_update(m->metrics, text);
	}

	char line[1024] = "";
	size_t off = 0;
	for (size_t i = 0; i < m->n_pools && off < sizeof line - 64; i++) {
		const PoolStatus *p = &ps[i];
		char depth[32];
		if (p->depth_valid)
			snprintf(depth, sizeof depth, "%.0f", p->depth);
		else
			snprintf(depth, sizeof depth, "?");
		off += (size_t)snprintf(line + off, sizeof line - off, "%s%s %d/%d depth %s",
					i ? "; " : "", p->name ? p->name : "?",
					p->running + p->starting, p->max, depth);
	}
	sd_notifyf(0, "STATUS=%s", line);
	free(ps);
}

static void manager_reload(Manager *m);

static void tick_finish(Manager *m)
{
	m->requests_last_tick = http_requests_total(m->http) - m->requests_at_tick;

	if (m->list_r < 0) {
		if (!m->docker_down_logged)
			log_warning("Docker unavailable (%s); holding every pool as it is",
				    m->list_error ? m->list_error : strerror(-m->list_r));
		m->docker_down_logged = true;
	} else if (m->docker_down_logged) {
		log_notice("Docker is back");
		m->docker_down_logged = false;
	}

	for (size_t i = 0; i < m->n_pools; i++)
		pool_tick(m, m->pools[i]);
	log_debug("tick: %llu HTTP requests to poll", (unsigned long long)m->requests_last_tick);
	manager_publish_status(m);

	if (!m->ready_sent) {
		sd_notify(0, "READY=1");
		m->ready_sent = true;
		log_info("sluiced %s ready: %zu pool%s, interval %g s%s", PACKAGE_VERSION,
			 m->n_pools, m->n_pools == 1 ? "" : "s", m->config->interval,
			 m->opts.dry_run ? ", dry run" : "");
	}
	tick_clear(m);

	if (m->opts.once) {
		m->once_done = true;
		manager_maybe_finish_once(m);
	}
	if (m->reload_pending) {
		m->reload_pending = false;
		manager_reload(m);
	}
}

static void tick_maybe_finish(Manager *m)
{
	if (m->outstanding == 0)
		tick_finish(m);
}

static void on_depths(int r, const char *error, const QueueDepth *q, size_t n, void *userdata)
{
	Query *query = userdata;
	Manager *m = query->m;

	query->r = r;
	query->latency = now_mono() - query->started;
	if (r < 0)
		query->error = strdup(error ? error : strerror(-r));
	else if (n > 0) {
		query->results = calloc(n, sizeof(QueueDepth));
		for (size_t i = 0; query->results && i < n; i++) {
			query->results[i] = q[i];
			query->results[i].name = q[i].name ? strdup(q[i].name) : NULL;
		}
		query->n_results = query->results ? n : 0;
	}
	m->outstanding--;
	tick_maybe_finish(m);
}

static void on_list(int r, const char *error, DockerContainer *list, size_t n, void *userdata)
{
	Manager *m = userdata;

	m->list_r = r;
	if (r < 0)
		m->list_error = strdup(error ? error : strerror(-r));
	else {
		/* Take the entries over: the list is only borrowed during the callback. */
		m->list = calloc(n + 1, sizeof(DockerContainer));
		if (!m->list)
			m->list_r = -ENOMEM;
		else {
			memcpy(m->list, list, n * sizeof(DockerContainer));
			memset(list, 0, n * sizeof(DockerContainer));
			m->n_list = n;
		}
	}
	m->outstanding--;
	tick_maybe_finish(m);
}

static int tick_add_query(Manager *m, SourceKind source, const char *vhost, char *const *queues,
			  size_t n)
{
	Query *q = NULL;
	for (size_t i = 0; i < m->n_queries; i++)
		if (m->queries[i].source == source && strcmp(m->queries[i].vhost, vhost) == 0)
			q = &m->queries[i];
	if (!q) {
		Query *nq = realloc(m->queries, (m->n_queries + 1) * sizeof(Query));
		if (!nq)
			return -ENOMEM;
		m->queries = nq;
		q = &m->queries[m->n_queries++];
		*q = (Query){.m = m, .source = source, .vhost = strdup(vhost)};
		if (!q->vhost)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		bool seen = false;
		for (size_t j = 0; j < q->n_queues; j++)
			if (strcmp(q->queues[j], queues[i]) == 0)
				seen = true;
		if (!seen && strv_add(&q->queues, &q->n_queues, queues[i]) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void tick_start(Manager *m)
{
	if (m->tick_running) {
		log_debug("previous tick still running; skipping this one");
		return;
	}
	m->tick_running = true;
	m->requests_at_tick = http_requests_total(m->http);

	for (size_t i = 0; i < m->n_pools; i++) {
		const PoolConfig *c = m->pools[i]->cfg;
		if (tick_add_query(m, c->source, c->vhost, c->queues, c->n_queues) < 0) {
			log_error("out of memory");
			tick_clear(m);
			return;
		}
	}

	/* The list first: the reconcile needs it even when the broker is down. */
	m->outstanding = 1 + (unsigned)m->n_queries;
	m->list_started = now_mono();
	int r = docker_list(m->docker, on_list, m);
	if (r < 0)
		on_list(r, strerror(-r), NULL, 0, m);

	double mono = now_mono();
	for (size_t i = 0; i < m->n_queries; i++) {
		Query *q = &m->queries[i];
		q->started = mono;
		if (q->source == SOURCE_AMQP)
			r = amqp_source_query(m->amqp, q->vhost, q->queues, q->n_queues, on_depths,
					      q);
		else
			r = rabbit_query(m->rabbit, q->vhost, q->queues, q->n_queues, mono, on_depths,
					 q);
		if (r < 0)
			on_depths(r, strerror(-r), NULL, 0, q);
	}
}

static int on_tick_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	Manager *m = userdata;
	uint64_t now;

	sd_event_now(m->event, CLOCK_MONOTONIC, &now);
	m->loop_latency = usec > 0 && now > usec ? (double)(now - usec) / 1e6 : 0;
	if (m->opts.once && m->ticked)
		return 0;
	m->ticked = true;
	tick_start(m);
	if (m->opts.once)
		return 0; /* one pass: the timer is not re-armed */

	uint64_t step = (uint64_t)(m->config->interval * 1e6);
	uint64_t next = usec + step;
	if (next <= now)
		next = now + step;
	sd_event_source_set_time(s, next);
	sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
	return 0;
}

static void manager_maybe_finish_once(Manager *m)
{
	if (m->opts.once && m->once_done && m->ops == 0)
		sd_event_exit(m->event, 0);
}

/* --- clients, reload ---------------------------------------------------------------------- */

static int manager_open_sources(Manager *m, const Config *c)
{
	int r;
	bool need_amqp = false;

	for (size_t i = 0; i < c->n_pools; i++)
		if (c->pools[i].source == SOURCE_AMQP)
			need_amqp = true;
	m->rabbit = rabbit_free(m->rabbit);
	r = rabbit_new(m->http, c, &m->rabbit);
	if (r < 0)
		return r;
	m->amqp = amqp_source_free(m->amqp);
	if (need_amqp) {
		r = amqp_source_new(m->event, c, &m->amqp);
		if (r < 0)
			return r;
	}
	return 0;
}

static int manager_open_metrics(Manager *m, const Config *c)
{
	m->metrics = metrics_free(m->metrics);
	if (!c->metrics_listen)
		return 0;
	_cleanup_free_ char *err = NULL;
	int r = metrics_new(m->event, c->metrics_listen, &m->metrics, &err);
	if (r < 0)
		log_error("%s", err ? err : strerror(-r));
	return r;
}

static int manager_set_pools(Manager *m, Config *c)
{
	Pool **pools = calloc(c->n_pools + 1, sizeof(Pool *));
	if (!pools)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_pools; i++) {
		const PoolConfig *pc = &c->pools[i];
		Pool *old = manager_find_pool(m, pc->name);
		if (old) {
			if (strcmp(old->cfg->spec_hash, pc->spec_hash) != 0)
				log_notice("%s: worker spec changed (%s -> %s); replacing workers one "
					   "at a time",
					   pc->name, old->cfg->spec_hash, pc->spec_hash);
			old->cfg = pc;
			pools[i] = old;
			for (size_t j = 0; j < m->n_pools; j++)
				if (m->pools[j] == old)
					m->pools[j] = NULL;
		} else if (!(pools[i] = pool_new(pc))) {
			for (size_t j = 0; j < i; j++)
				if (!manager_find_pool(m, pools[j]->name))
					pool_free(pools[j]);
			free(pools);
			return -ENOMEM;
		}
	}
	for (size_t j = 0; j < m->n_pools; j++)
		if (m->pools[j]) {
			log_warning("%s: pool removed from the configuration; its workers are left "
				    "running and no longer scaled",
				    m->pools[j]->name);
			pool_free(m->pools[j]);
		}
	free(m->pools);
	m->pools = pools;
	m->n_pools = c->n_pools;
	return 0;
}

static void manager_reload(Manager *m)
{
	if (m->tick_running) {
		m->reload_pending = true;
		return;
	}
	sd_notify(0, "RELOADING=1");
	log_info("reloading %s", m->opts.config_path);

	Config *c = NULL;
	_cleanup_free_ char *err = NULL;
	int r = config_load(m->opts.config_path, &c, &err);
	if (r < 0) {
		log_error("%s; keeping the running configuration",
			  err ? err : strerror(-r));
		sd_notify(0, "READY=1");
		return;
	}

	if (strcmp(c->docker_socket, m->config->docker_socket) != 0) {
		/* Operations in flight belong to the open client; switching sockets under them
		 * would orphan them. */
		log_warning("docker.socket changes only on restart; keeping %s",
			    m->config->docker_socket);
		free(c->docker_socket);
		c->docker_socket = strdup(m->config->docker_socket);
	}
	r = manager_set_pools(m, c);
	if (r >= 0)
		r = manager_open_sources(m, c);
	if (r < 0) {
		log_error("reload failed: %s; keeping the running configuration", strerror(-r));
		/* Pools may point into the new config already: keep both consistent. */
		manager_set_pools(m, m->config);
		manager_open_sources(m, m->config);
		config_free(c);
		sd_notify(0, "READY=1");
		return;
	}
	bool metrics_changed = !streq_ptr(c->metrics_listen, m->config->metrics_listen);
	config_free(m->config);
	m->config = c;
	if (metrics_changed)
		manager_open_metrics(m, c);
	log_info("configuration reloaded: %zu pool%s", c->n_pools, c->n_pools == 1 ? "" : "s");
	sd_notify(0, "READY=1");

	/* Apply the new configuration now rather than at the next interval. */
	sd_event_source_set_time(m->tick_timer, 0);
	sd_event_source_set_enabled(m->tick_timer, SD_EVENT_ONESHOT);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	Manager *m = userdata;

	if (si->ssi_signo == SIGHUP) {
		manager_reload(m);
		return 0;
	}
	log_info("received %s; exiting, workers are left running",
		 si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
	sd_notify(0, "STOPPING=1");
	sd_event_exit(m->event, 0);
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int manager_new(const ManagerOptions *o, Config *config, Manager **ret)
{
	Manager *m = calloc(1, sizeof(Manager));
	int r;

	if (!m) {
		config_free(config);
		return -ENOMEM;
	}
	m->opts = *o;
	m->config = config;

	const char *rd = getenv("RUNTIME_DIRECTORY");
	m->runtime_dir = strdup(rd && *rd ? rd : "/run/sluice");
	if (!m->runtime_dir) {
		r = -ENOMEM;
		goto fail;
	}
	/* systemd may pass several, separated by ':'; the first is ours. */
	char *colon = strchr(m->runtime_dir, ':');
	if (colon)
		*colon = '\0';
	r = mkdir_p(m->runtime_dir, 0755);
	if (r < 0)
		log_warning("cannot create %s: %s; status will not be available", m->runtime_dir,
			    strerror(-r));

	r = sd_event_default(&m->event);
	if (r < 0)
		goto fail;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m)) < 0 ||
	    (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_signal, m)) < 0)
		goto fail;
	/* WATCHDOG=1 from the loop itself, at half of WatchdogSec=, when systemd asks for it. */
	(void)sd_event_set_watchdog(m->event, true);

	if ((r = http_new(m->event, &m->http)) < 0)
		goto fail;
	if ((r = docker_new(m->http, config->docker_socket, &m->docker)) < 0)
		goto fail;
	if ((r = manager_open_sources(m, config)) < 0)
		goto fail;
	if ((r = manager_open_metrics(m, config)) < 0)
		goto fail;
	if ((r = manager_set_pools(m, config)) < 0)
		goto fail;
	r = sd_event_add_time(m->event, &m->tick_timer, CLOCK_MONOTONIC, 0, 1000, on_tick_timer,
			      m);
	if (r < 0)
		goto fail;
	sd_event_source_set_enabled(m->tick_timer, SD_EVENT_ONESHOT);

	*ret = m;
	return 0;
fail:
	log_error("cannot start: %s", strerror(-r));
	manager_free(m);
	return r;
}

Manager *manager_free(Manager *m)
{
	if (!m)
		return NULL;
	tick_clear(m);
	for (size_t i = 0; i < m->n_pools; i++)
		pool_free(m->pools[i]);
	free(m->pools);
	m->tick_timer = sd_event_source_unref(m->tick_timer);
	m->metrics = metrics_free(m->metrics);
	m->amqp = amqp_source_free(m->amqp);
	m->rabbit = rabbit_free(m->rabbit);
	m->docker = docker_free(m->docker);
	m->http = http_free(m->http);
	m->event = sd_event_unref(m->event);
	config_free(m->config);
	free(m->runtime_dir);
	free(m);
	return NULL;
}

int manager_run(Manager *m)
{
	return sd_event_loop(m->event);
}
