/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "pool.h"

void pool_container_name(char *buf, size_t size, const char *pool, unsigned index)
{
	snprintf(buf, size, "sluice-%s-%u", pool, index);
}

void pool_draining_name(char *buf, size_t size, const char *pool, unsigned index, double now)
{
	snprintf(buf, size, "sluice-%s-%u-draining-%lld", pool, index, (long long)now);
}

int pool_parse_name(const char *name, const char *pool, unsigned *ret_index, bool *ret_draining,
		    double *ret_since)
{
	size_t lp = strlen(pool);

	if (strncmp(name, "sluice-", 7) != 0 || strncmp(name + 7, pool, lp) != 0 ||
	    name[7 + lp] != '-')
		return -EINVAL;
	const char *s = name + 7 + lp + 1;
	char *end;
	errno = 0;
	unsigned long idx = strtoul(s, &end, 10);
	if (end == s || errno || idx > UINT_MAX || *s == '-' || *s == '+')
		return -EINVAL;

	bool draining = false;
	double since = 0;
	if (*end == '\0')
		;
	else if (strncmp(end, "-draining-", 10) == 0) {
		char *e2;
		long long t = strtoll(end + 10, &e2, 10);
		if (*e2 != '\0' || e2 == end + 10)
			return -EINVAL;
		draining = true;
		since = (double)t;
	} else
		return -EINVAL;

	*ret_index = (unsigned)idx;
	*ret_draining = draining;
	*ret_since = since;
	return 0;
}

static bool strv_contains(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] && s && strcmp(v[i], s) == 0)
			return true;
	return false;
}

int pool_observe(const PoolConfig *p, const DockerContainer *list, size_t n,
		 const PendingCreate *pending, size_t n_pending, char *const *busy_ids,
		 size_t n_busy, char *const *draining_ids, size_t n_draining, double now,
		 PoolView *ret)
{
	PoolView v = {0};

	v.workers = calloc(n + n_pending + 1, sizeof(Worker));
	if (!v.workers)
		return -ENOMEM;

	for (size_t i = 0; i < n; i++) {
		const DockerContainer *c = &list[i];
		/* Ownership: both labels, exactly. Anything else is not ours to touch. */
		if (!c->managed || !c->pool || strcmp(c->pool, p->name) != 0)
			continue;

		Worker *w = &v.workers[v.n++];
		w->id = c->id;
		w->name = c->name;
		w->created = (double)c->created;
		w->exit_code = c->exit_code;
		w->fresh = c->spec && strcmp(c->spec, p->spec_hash) == 0;
		w->busy = strv_contains(busy_ids, n_busy, c->id);

		bool draining = false;
		double since = 0;
		if (!c->name || pool_parse_name(c->name, p->name, &w->index, &draining, &since) < 0)
			w->index = UINT_MAX; /* ours by label, but renamed by hand: no slot */
		if (strv_contains(draining_ids, n_draining, c->id))
			draining = true;
		w->drained = draining;
		w->drain_since = since;

		const char *st = c->state ? c->state : "";
		if (strcmp(st, "exited") == 0 || strcmp(st, "dead") == 0)
			w->state = WORKER_EXITED;
		else if (strcmp(st, "created") == 0) {
			/* Never started: nothing can be running in it, so a drain is just a
			 * removal; a draining name here means the stop raced the start. */
			w->created_only = true;
			w->state = draining ? WORKER_DRAINING : WORKER_STARTING;
		} else if (strcmp(st, "running") == 0 || strcmp(st, "paused") == 0 ||
			   strcmp(st, "restarting") == 0) {
			if (draining)
				w->state = WORKER_DRAINING;
			else if (now - w->created < POOL_WARMUP_SEC)
				w->state = WORKER_STARTING;
			else
				w->state = WORKER_RUNNING;
		} else
			w->state = WORKER_OTHER;
	}

	for (size_t i = 0; i < n_pending; i++) {
		bool listed = false;
		for (size_t j = 0; j < v.n; j++)
			if (v.workers[j].name && strcmp(v.workers[j].name, pending[i].name) == 0)
				listed = true;
		if (listed)
			continue;
		Worker *w = &v.workers[v.n++];
		w->name = pending[i].name;
		w->index = pending[i].index;
		w->fresh = true;
		w->busy = true;
		w->state = WORKER_STARTING;
		w->created = now;
	}

	for (size_t i = 0; i < v.n; i++) {
		Worker *w = &v.workers[i];
		switch (w->state) {
		case WORKER_RUNNING:
			v.running++;
			break;
		case WORKER_STARTING:
			v.starting++;
			break;
		case WORKER_DRAINING:
			v.draining++;
			break;
		case WORKER_EXITED:
			v.exited++;
			break;
		default:
			break;
		}
		if (w->state == WORKER_RUNNING || w->state == WORKER_STARTING) {
			if (w->fresh)
				v.fresh++;
			else
				v.outdated++;
		}
	}

	*ret = v;
	return 0;
}

void pool_view_free(PoolView *v)
{
	free(v->workers);
	*v = (PoolView){0};
}

static int plan_add(Plan *plan, size_t cap, Action a)
{
	if (plan->n >= cap)
		return -ENOBUFS;
	plan->actions[plan->n++] = a;
	return 0;
}

/* Whether the plan already acts on container ID. */
static bool plan_has(const Plan *plan, const char *id)
{
	for (size_t i = 0; i < plan->n; i++)
		if (plan->actions[i].id && strcmp(plan->actions[i].id, id) == 0)
			return true;
	return false;
}

static bool index_used(const PoolView *v, const Plan *plan, unsigned idx)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->workers[i].index == idx)
			return true;
	for (size_t i = 0; i < v->n_reserved; i++)
		if (v->reserved[i] == idx)
			return true;
	for (size_t i = 0; i < plan->n; i++)
		if (plan->actions[i].kind == ACTION_CREATE && plan->actions[i].index == idx)
			return true;
	return false;
}

static int plan_create(const PoolConfig *p, const PoolView *v, Plan *plan, size_t cap)
{
	unsigned idx = 1;
	while (index_used(v, plan, idx))
		idx++;
	Action a = {.kind = ACTION_CREATE, .index = idx};
	pool_container_name(a.name, sizeof a.name, p->name, idx);
	plan->to_create++;
	return plan_add(plan, cap, a);
}

/* Victim order (SPEC "Scale-down and drain"): the one most likely idle first. A worker never
 * started holds no task; one still warming up has not fetched one yet; an outdated one is due
 * for replacement anyway; among the rest, the newest has had the least time to pick up work. */
static int victim_rank(const Worker *w)
{
	if (w->created_only)
		return 0;
	if (w->state == WORKER_STARTING)
		return 1;
	if (!w->fresh)
		return 2;
	return 3;
}

static const Worker *pick_victim(const PoolView *v, const Plan *plan, bool outdated_only)
{
	const Worker *best = NULL;
	for (size_t i = 0; i < v->n; i++) {
		const Worker *w = &v->workers[i];
		if (!w->id || w->busy || (w->state != WORKER_RUNNING && w->state != WORKER_STARTING))
			continue;
		if (outdated_only && w->fresh)
			continue;
		if (plan_has(plan, w->id))
			continue;
		if (!best || victim_rank(w) < victim_rank(best) ||
		    (victim_rank(w) == victim_rank(best) && w->created > best->created))
			best = w;
	}
	return best;
}

static int plan_drain(const PoolConfig *p, Plan *plan, size_t cap, const Worker *w, double now)
{
	Action a = {.kind = w->created_only ? ACTION_REMOVE : ACTION_DRAIN,
		    .id = w->id,
		    .index = w->index};
	if (a.kind == ACTION_DRAIN)
		pool_draining_name(a.name, sizeof a.name, p->name, w->index, now);
	else
		snprintf(a.name, sizeof a.name, "%s", w->name ? w->name : "");
	plan->to_drain++;
	return plan_add(plan, cap, a);
}

int pool_plan(const PoolConfig *p, const PoolView *v, int desired, bool in_backoff, double now,
	      Plan *ret)
{
	Plan plan = {0};
	int capacity = v->running + v->starting;
	size_t cap = v->n * 2 + (size_t)(desired > 0 ? desired : 0) + 4;
	int r;

	plan.actions = calloc(cap, sizeof(Action));
	if (!plan.actions)
		return -ENOMEM;

	/* Exited workers go; the manager records whether they crashed early. */
	for (size_t i = 0; i < v->n; i++) {
		const Worker *w = &v->workers[i];
		if (w->state != WORKER_EXITED || w->busy || !w->id)
			continue;
		Action a = {.kind = ACTION_REMOVE, .id = w->id, .index = w->index};
		snprintf(a.name, sizeof a.name, "%s", w->name ? w->name : "");
		a.crashed = !w->drained;
		a.early = a.crashed && now - w->created < POOL_CRASH_WINDOW_SEC;
		if ((r = plan_add(&plan, cap, a)) < 0)
			goto fail;
	}

	/* A drain whose stop never reached Docker (sluiced died in between) is completed. */
	for (size_t i = 0; i < v->n; i++) {
		const Worker *w = &v->workers[i];
		if (w->state != WORKER_DRAINING || w->busy || !w->id || w->drain_since <= 0)
			continue;
		if (w->created_only || now - w->drain_since > p->stop_timeout + POOL_RESTOP_MARGIN_SEC) {
			Action a = {.kind = w->created_only ? ACTION_REMOVE : ACTION_RESTOP,
				    .id = w->id,
				    .index = w->index};
			snprintf(a.name, sizeof a.name, "%s", w->name ? w->name : "");
			if ((r = plan_add(&plan, cap, a)) < 0)
				goto fail;
		}
	}

	plan.rolling = v->outdated > 0;
	/* During a roll-out one extra worker may exist: the new one comes up before the old one is
	 * drained (like a Deployment's maxSurge = 1). */
	int allowance = desired + (plan.rolling ? 1 : 0);
	bool fresh_starting = false;
	for (size_t i = 0; i < v->n; i++)
		if (v->workers[i].state == WORKER_STARTING && v->workers[i].fresh)
			fresh_starting = true;

	if (capacity < desired) {
		if (in_backoff)
			plan.backoff = true;
		else
			for (int i = capacity; i < desired; i++)
				if ((r = plan_create(p, v, &plan, cap)) < 0)
					goto fail;
	} else if (capacity > allowance) {
		for (int i = allowance; i < capacity; i++) {
			const Worker *w = pick_victim(v, &plan, false);
			if (!w)
				break;
			if ((r = plan_drain(p, &plan, cap, w, now)) < 0)
				goto fail;
		}
	} else if (plan.rolling && !fresh_starting) {
		if (capacity == desired) {
			if (in_backoff)
				plan.backoff = true;
			else if ((r = plan_create(p, v, &plan, cap)) < 0)
				goto fail;
		} else {
			const Worker *w = pick_victim(v, &plan, true);
			if (w && (r = plan_drain(p, &plan, cap, w, now)) < 0)
				goto fail;
		}
	}

	/* Workers created but never started (sluiced died in between) are started, unless they
	 * were just chosen as victims. */
	for (size_t i = 0; i < v->n; i++) {
		const Worker *w = &v->workers[i];
		if (!w->created_only || w->busy || !w->id || w->state != WORKER_STARTING)
			continue;
		if (plan_has(&plan, w->id))
			continue;
		Action a = {.kind = ACTION_START, .id = w->id, .index = w->index};
		snprintf(a.name, sizeof a.name, "%s", w->name ? w->name : "");
		if ((r = plan_add(&plan, cap, a)) < 0)
			goto fail;
	}

	*ret = plan;
	return 0;
fail:
	free(plan.actions);
	return r;
}

void plan_free(Plan *plan)
{
	free(plan->actions);
	*plan = (Plan){0};
}

double pool_backoff_delay(unsigned crashes)
{
	if (crashes == 0)
		return 0;
	double d = POOL_BACKOFF_MIN_SEC * pow(2.0, (double)MIN(crashes - 1, 20u));
	return MIN(d, POOL_BACKOFF_MAX_SEC);
}
