/* SPDX-License-Identifier: MIT */
/* The status snapshot: JSON (status.json, written atomically by sluiced, read by sluicectl),
 * the `sluicectl status` table, `sluicectl explain`, and the Prometheus text exposition.
 * Everything here is a function of the snapshot and a caller-supplied `now`, apart from the
 * two file functions. Metric names and meanings: docs/metrics.md. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "status.h"

#define STATUS_FILE "status.json"
#define STATUS_FILE_TMP "status.json.tmp"
#define STATUS_MAX_SIZE (16u * 1024 * 1024)

static const char *const errkind_table[_ERRKIND_MAX] = {
    [ERRKIND_HTTP] = "http",   [ERRKIND_TIMEOUT] = "timeout", [ERRKIND_CONNECT] = "connect",
    [ERRKIND_PARSE] = "parse", [ERRKIND_ABSENT] = "absent",   [ERRKIND_DOCKER] = "docker",
    [ERRKIND_CRASH] = "crash",
};

const char *errkind_to_string(ErrKind k)
{
	if ((unsigned)k >= _ERRKIND_MAX)
		return NULL;
	return errkind_table[k];
}

static Guard guard_from_string(const char *s)
{
	if (!s)
		return GUARD_NONE;
	for (int g = 0; g < _GUARD_MAX; g++)
		if (streq_ptr(guard_to_string((Guard)g), s))
			return (Guard)g;
	return GUARD_NONE;
}

/* "-" for GUARD_NONE (or an unnamed guard), its name otherwise. */
static const char *guard_name(Guard g)
{
	const char *n;

	if (g == GUARD_NONE)
		return "-";
	n = guard_to_string(g);
	return n ? n : "?";
}

void pool_status_clear(PoolStatus *p)
{
	if (!p)
		return;
	free(p->name);
	free(p->source);
	free(p->queues);
	free(p->depth_error);
	free(p->guard_detail);
	free(p->last_action);
	memset(p, 0, sizeof(*p));
}

Status *status_free(Status *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->n_pools; i++)
		pool_status_clear(&s->pools[i]);
	free(s->pools);
	free(s->version);
	free(s);
	return NULL;
}
DEFINE_CLEANUP_FUNC(Status, status_free)
/* json_decrefp() comes with jansson (>= 2.11, for json_auto_t). */

/* ---- JSON ---------------------------------------------------------------------------- */

/* json_real() refuses NaN and infinities; they become null (read back as 0). */
static json_t *jreal(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static int set(json_t *o, const char *key, json_t *v)
{
	/* json_object_set_new() steals v even on failure; NULL v means out of memory. */
	if (!v || json_object_set_new(o, key, v) < 0)
		return -ENOMEM;
	return 0;
}

static json_t *pool_to_json(const PoolStatus *p)
{
	_cleanup_(json_decrefp) json_t *o = json_object(), *d = NULL, *e = NULL;
	int r = 0;

	if (!o)
		return NULL;
	d = json_object();
	e = json_object();
	if (!d || !e)
		return NULL;

	r |= set(d, "desired", json_integer(p->decision.desired));
	r |= set(d, "recommendation", json_integer(p->decision.recommendation));
	r |= set(d, "ratio", jreal(p->decision.ratio));
	r |= set(d, "active", json_boolean(p->decision.active));
	r |= set(d, "guard", jstr(guard_to_string(p->decision.guard)));

	for (int k = 0; k < _ERRKIND_MAX; k++)
		r |= set(e, errkind_to_string((ErrKind)k), json_integer((json_int_t)p->errors[k]));

	r |= set(o, "name", jstr(p->name));
	r |= set(o, "source", jstr(p->source));
	r |= set(o, "queues", jstr(p->queues));
	r |= set(o, "depth_valid", json_boolean(p->depth_valid));
	r |= set(o, "depth", p->depth_valid ? jreal(p->depth) : json_null());
	r |= set(o, "depth_time", jreal(p->depth_time));
	r |= set(o, "depth_error", jstr(p->depth_error));
	r |= set(o, "running", json_integer(p->running));
	r |= set(o, "starting", json_integer(p->starting));
	r |= set(o, "draining", json_integer(p->draining));
	r |= set(o, "desired", json_integer(p->desired));
	r |= set(o, "min", json_integer(p->min));
	r |= set(o, "max", json_integer(p->max));
	r |= set(o, "target", jreal(p->target));
	r |= set(o, "activation", jreal(p->activation));
	r |= set(o, "decision", TAKE_PTR(d));
	r |= set(o, "guard", jstr(guard_to_string(p->guard)));
	r |= set(o, "guard_detail", jstr(p->guard_detail));
	r |= set(o, "last_action", jstr(p->last_action));
	r |= set(o, "last_action_time", jreal(p->last_action_time));
	r |= set(o, "failures", json_integer(p->failures));
	r |= set(o, "backoff_until", jreal(p->backoff_until));
	r |= set(o, "scale_up_total", json_integer((json_int_t)p->scale_up_total));
	r |= set(o, "scale_down_total", json_integer((json_int_t)p->scale_down_total));
	r |= set(o, "errors", TAKE_PTR(e));
	r |= set(o, "poll_latency", jreal(p->poll_latency));
	if (r < 0)
		return NULL;
	return TAKE_PTR(o);
}

char *status_to_json(const Status *s)
{
	_cleanup_(json_decrefp) json_t *o = json_object(), *pools = json_array();
	int r = 0;

	if (!o || !pools)
		return NULL;
	for (size_t i = 0; i < s->n_pools; i++)
		if (json_array_append_new(pools, pool_to_json(&s->pools[i])) < 0)
			return NULL;

	r |= set(o, "time", jreal(s->time));
	r |= set(o, "version", jstr(s->version));
	r |= set(o, "interval", jreal(s->interval));
	r |= set(o, "dry_run", json_boolean(s->dry_run));
	r |= set(o, "requests_last_tick", json_integer((json_int_t)s->requests_last_tick));
	r |= set(o, "loop_latency", jreal(s->loop_latency));
	r |= set(o, "pools", TAKE_PTR(pools));
	if (r < 0)
		return NULL;
	/* Keys in insertion order, 2-space indent: readable with cat, stable for diffs. */
	return json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
}

/* Readers: a missing or null member is the zero value (an older or newer sluiced may have
 * written the file); a member of the wrong type is an error. */
static int get_num(json_t *o, const char *key, double *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = 0;
		return 0;
	}
	if (!json_is_number(v))
		return -EBADMSG;
	*ret = json_number_value(v);
	return 0;
}

static int get_int(json_t *o, const char *key, int *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = 0;
		return 0;
	}
	if (!json_is_integer(v))
		return -EBADMSG;
	*ret = (int)json_integer_value(v);
	return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = 0;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EBADMSG;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_bool(json_t *o, const char *key, bool *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = false;
		return 0;
	}
	if (!json_is_boolean(v))
		return -EBADMSG;
	*ret = json_is_true(v);
	return 0;
}

static int get_str(json_t *o, const char *key, char **ret)
{
	json_t *v = json_object_get(o, key);

	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return -EBADMSG;
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

static int get_guard(json_t *o, const char *key, Guard *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = GUARD_NONE;
		return 0;
	}
	if (!json_is_string(v))
		return -EBADMSG;
	*ret = guard_from_string(json_string_value(v));
	return 0;
}

#define TRY(x)                                                                                     \
	do {                                                                                       \
		int _r_ = (x);                                                                     \
		if (_r_ < 0)                                                                       \
			return _r_;                                                                \
	} while (0)

static int pool_from_json(json_t *o, PoolStatus *p)
{
	json_t *d, *e;
	int i;

	if (!json_is_object(o))
		return -EBADMSG;

	TRY(get_str(o, "name", &p->name));
	if (!p->name)
		return -EBADMSG;
	TRY(get_str(o, "source", &p->source));
	TRY(get_str(o, "queues", &p->queues));
	TRY(get_bool(o, "depth_valid", &p->depth_valid));
	TRY(get_num(o, "depth", &p->depth));
	TRY(get_num(o, "depth_time", &p->depth_time));
	TRY(get_str(o, "depth_error", &p->depth_error));
	TRY(get_int(o, "running", &p->running));
	TRY(get_int(o, "starting", &p->starting));
	TRY(get_int(o, "draining", &p->draining));
	TRY(get_int(o, "desired", &p->desired));
	TRY(get_int(o, "min", &p->min));
	TRY(get_int(o, "max", &p->max));
	TRY(get_num(o, "target", &p->target));
	TRY(get_num(o, "activation", &p->activation));

	d = json_object_get(o, "decision");
	if (d && !json_is_null(d)) {
		if (!json_is_object(d))
			return -EBADMSG;
		TRY(get_int(d, "desired", &p->decision.desired));
		TRY(get_int(d, "recommendation", &p->decision.recommendation));
		TRY(get_num(d, "ratio", &p->decision.ratio));
		TRY(get_bool(d, "active", &p->decision.active));
		TRY(get_guard(d, "guard", &p->decision.guard));
	}

	TRY(get_guard(o, "guard", &p->guard));
	TRY(get_str(o, "guard_detail", &p->guard_detail));
	TRY(get_str(o, "last_action", &p->last_action));
	TRY(get_num(o, "last_action_time", &p->last_action_time));
	TRY(get_int(o, "failures", &i));
	if (i < 0)
		return -EBADMSG;
	p->failures = (unsigned)i;
	TRY(get_num(o, "backoff_until", &p->backoff_until));
	TRY(get_u64(o, "scale_up_total", &p->scale_up_total));
	TRY(get_u64(o, "scale_down_total", &p->scale_down_total));

	e = json_object_get(o, "errors");
	if (e && !json_is_null(e)) {
		if (!json_is_object(e))
			return -EBADMSG;
		for (int k = 0; k < _ERRKIND_MAX; k++)
			TRY(get_u64(e, errkind_to_string((ErrKind)k), &p->errors[k]));
	}

	TRY(get_num(o, "poll_latency", &p->poll_latency));
	if (!p->depth_valid)
		p->depth = 0;
	return 0;
}

int status_from_json(const char *json, Status **ret)
{
	_cleanup_(json_decrefp) json_t *o = NULL;
	_cleanup_(status_freep) Status *s = NULL;
	json_t *pools;
	size_t n;

	o = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
	if (!o || !json_is_object(o))
		return -EBADMSG;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	TRY(get_num(o, "time", &s->time));
	TRY(get_str(o, "version", &s->version));
	TRY(get_num(o, "interval", &s->interval));
	TRY(get_bool(o, "dry_run", &s->dry_run));
	TRY(get_u64(o, "requests_last_tick", &s->requests_last_tick));
	TRY(get_num(o, "loop_latency", &s->loop_latency));

	pools = json_object_get(o, "pools");
	if (!json_is_array(pools))
		return -EBADMSG;
	n = json_array_size(pools);
	if (n > 0) {
		s->pools = calloc(n, sizeof(PoolStatus));
		if (!s->pools)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		/* Count the pool before filling it, so status_free() releases a partial one. */
		s->n_pools = i + 1;
		TRY(pool_from_json(json_array_get(pools, i), &s->pools[i]));
	}

	*ret = TAKE_PTR(s);
	return 0;
}

/* ---- files --------------------------------------------------------------------------- */

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t k = write(fd, buf, len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += k;
		len -= (size_t)k;
	}
	return 0;
}

int status_write(const Status *s, const char *dir)
{
	_cleanup_free_ char *json = NULL, *tmp = NULL, *path = NULL;
	int fd, r;

	json = status_to_json(s);
	if (!json)
		return -ENOMEM;
	if (asprintf(&tmp, "%s/" STATUS_FILE_TMP, dir) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	if (asprintf(&path, "%s/" STATUS_FILE, dir) < 0) {
		path = NULL;
		return -ENOMEM;
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	/* sluiced may run with UMask=0077; sluicectl runs as another user and must read it. */
	if (fchmod(fd, 0644) < 0)
		r = -errno;
	else
		r = write_all(fd, json, strlen(json));
	if (r >= 0)
		r = write_all(fd, "\n", 1);
	if (close(fd) < 0 && r >= 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		(void)unlink(tmp);
	return r;
}

int status_read(const char *dir, Status **ret)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	struct stat st;
	size_t len = 0;
	int fd, r = 0;

	if (asprintf(&path, "%s/" STATUS_FILE, dir) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EBADMSG;
		goto out;
	}
	if ((uint64_t)st.st_size > STATUS_MAX_SIZE) {
		r = -EFBIG;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	/* The file is replaced by rename, never rewritten in place: the size is stable. */
	while (len < (size_t)st.st_size) {
		ssize_t k = read(fd, buf + len, (size_t)st.st_size - len);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		len += (size_t)k;
	}
	buf[len] = '\0';
out:
	close(fd);
	if (r < 0)
		return r;
	return status_from_json(buf, ret);
}

/* ---- human output -------------------------------------------------------------------- */

/* "42", or "42.50" for fractional values. */
static void format_number(char *buf, size_t size, double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		snprintf(buf, size, "%.0f", v);
	else
		snprintf(buf, size, "%.2f", v);
}

/* A duration for humans: "3s", "4m12s", "2h05m", "3d04h". */
static void format_age(char *buf, size_t size, double seconds)
{
	long long t;

	if (!isfinite(seconds) || seconds < 0)
		seconds = 0;
	t = (long long)(seconds + 0.5);
	if (t < 60)
		snprintf(buf, size, "%llds", t);
	else if (t < 3600)
		snprintf(buf, size, "%lldm%02llds", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, size, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
	else
		snprintf(buf, size, "%lldd%02lldh", t / 86400, (t % 86400) / 3600);
}

enum {
	COL_POOL,
	COL_SOURCE,
	COL_DEPTH,
	COL_AGE,
	COL_CURRENT,
	COL_DESIRED,
	COL_MINMAX,
	COL_ACTION,
	COL_GUARD,
	_COL_MAX,
};

static const char *const col_header[_COL_MAX] = {
    "POOL", "SOURCE", "DEPTH", "AGE", "CURRENT", "DESIRED", "MIN/MAX", "LAST ACTION", "GUARD",
};

#define CELL_MAX 256

static void pool_row(const PoolStatus *p, double now, char cells[_COL_MAX][CELL_MAX])
{
	char a[64];

	snprintf(cells[COL_POOL], CELL_MAX, "%s", p->name ? p->name : "?");
	snprintf(cells[COL_SOURCE], CELL_MAX, "%s", p->source ? p->source : "-");
	if (p->depth_valid)
		format_number(cells[COL_DEPTH], CELL_MAX, p->depth);
	else
		snprintf(cells[COL_DEPTH], CELL_MAX, "?");
	/* The age of the last valid reading, also while the current one is unknown. */
	if (p->depth_time > 0)
		format_age(cells[COL_AGE], CELL_MAX, now - p->depth_time);
	else
		snprintf(cells[COL_AGE], CELL_MAX, "-");
	snprintf(cells[COL_CURRENT], CELL_MAX, "%d/%d/%d", p->running, p->starting, p->draining);
	snprintf(cells[COL_DESIRED], CELL_MAX, "%d", p->desired);
	snprintf(cells[COL_MINMAX], CELL_MAX, "%d/%d", p->min, p->max);
	if (p->last_action && p->last_action_time > 0) {
		format_age(a, sizeof(a), now - p->last_action_time);
		snprintf(cells[COL_ACTION], CELL_MAX, "%s (%s ago)", p->last_action, a);
	} else if (p->last_action)
		snprintf(cells[COL_ACTION], CELL_MAX, "%s", p->last_action);
	else
		snprintf(cells[COL_ACTION], CELL_MAX, "-");

	if (p->guard == GUARD_ERROR_HOLD || p->guard == GUARD_FALLBACK)
		/* N consecutive unknown readings; short, so the row fits 100 columns. */
		snprintf(cells[COL_GUARD], CELL_MAX, "%s (%u failed)", guard_name(p->guard),
		         p->failures);
	else if (p->guard == GUARD_BACKOFF && p->backoff_until > now) {
		format_age(a, sizeof(a), p->backoff_until - now);
		snprintf(cells[COL_GUARD], CELL_MAX, "%s (%s left)", guard_name(p->guard), a);
	} else
		snprintf(cells[COL_GUARD], CELL_MAX, "%s", guard_name(p->guard));
}

static void print_row(FILE *f, char cells[_COL_MAX][CELL_MAX], const size_t width[_COL_MAX])
{
	for (int c = 0; c < _COL_MAX; c++) {
		if (c == _COL_MAX - 1)
			fprintf(f, "%s\n", cells[c]);
		else
			fprintf(f, "%-*s  ", (int)width[c], cells[c]);
	}
}

void status_print_table(const Status *s, double now, FILE *f)
{
	char(*rows)[_COL_MAX][CELL_MAX] = NULL;
	char header[_COL_MAX][CELL_MAX];
	size_t width[_COL_MAX];

	for (int c = 0; c < _COL_MAX; c++) {
		snprintf(header[c], CELL_MAX, "%s", col_header[c]);
		width[c] = strlen(col_header[c]);
	}
	if (s->n_pools > 0)
		rows = calloc(s->n_pools, sizeof(*rows));
	for (size_t i = 0; rows && i < s->n_pools; i++) {
		pool_row(&s->pools[i], now, rows[i]);
		for (int c = 0; c < _COL_MAX; c++)
			width[c] = MAX(width[c], strlen(rows[i][c]));
	}
	print_row(f, header, width);
	for (size_t i = 0; rows && i < s->n_pools; i++)
		print_row(f, rows[i], width);
	free(rows);
}

int status_print_explain(const Status *s, const char *pool, double now, FILE *f)
{
	const PoolStatus *p = NULL;
	int capacity;
	char a[64], b[64], c[64];

	for (size_t i = 0; i < s->n_pools; i++)
		if (streq_ptr(s->pools[i].name, pool)) {
			p = &s->pools[i];
			break;
		}
	if (!p)
		return -ENOENT;
	capacity = p->running + p->starting;

	fprintf(f, "pool %s%s\n", p->name, s->dry_run ? " (dry run: sluiced changes nothing)" : "");

	fprintf(f, "\ninputs\n");
	fprintf(f, "  queues:       %s (source %s)\n", p->queues ? p->queues : "-",
	        p->source ? p->source : "-");
	if (p->depth_valid) {
		format_number(a, sizeof(a), p->depth);
		if (p->depth_time > 0) {
			format_age(b, sizeof(b), now - p->depth_time);
			fprintf(f, "  depth:        %s messages, read %s ago\n", a, b);
		} else
			fprintf(f, "  depth:        %s messages\n", a);
	} else {
		fprintf(f, "  depth:        unknown (%s)\n",
		        p->depth_error ? p->depth_error : "no valid reading");
		if (p->depth_time > 0) {
			format_age(b, sizeof(b), now - p->depth_time);
			fprintf(f, "                last valid reading %s ago\n", b);
		} else
			fprintf(f, "                no valid reading yet\n");
	}
	fprintf(f, "  workers:      %d running, %d starting, %d draining (capacity %d)\n",
	        p->running, p->starting, p->draining, capacity);
	format_number(a, sizeof(a), p->target);
	format_number(b, sizeof(b), p->activation);
	fprintf(f, "  target:       %s messages per worker\n", a);
	fprintf(f, "  activation:   %s (a pool at 0 wakes when depth > %s)\n", b, b);
	fprintf(f, "  min/max:      %d/%d\n", p->min, p->max);

	fprintf(f, "\nrecommendation\n");
	if (p->depth_valid && p->target > 0) {
		format_number(a, sizeof(a), p->depth);
		format_number(b, sizeof(b), p->target);
		fprintf(f, "  ceil(depth / target) = ceil(%s / %s) = %.0f\n", a, b,
		        ceil(p->depth / p->target));
		if (capacity > 0)
			fprintf(f,
			        "  ratio:        depth / (target x current) = %s / (%s x %d) = "
			        "%.2f%s\n",
			        a, b, capacity, p->decision.ratio,
			        fabs(p->decision.ratio - 1.0) <= POLICY_TOLERANCE
			            ? " (within the 10 % tolerance)"
			            : "");
		else
			fprintf(f, "  ratio:        - (no current workers)\n");
		format_number(c, sizeof(c), p->activation);
		fprintf(f, "  active:       %s (depth %s %s activation %s)\n",
		        p->decision.active ? "yes" : "no", a, p->decision.active ? ">" : "<=", c);
	} else
		fprintf(f, "  none: depth unknown, and unknown is never zero\n");
	fprintf(f, "  policy recommendation: %d\n", p->decision.recommendation);

	fprintf(f, "\nguard\n");
	fprintf(f, "  %s",
	        p->guard == GUARD_NONE ? "none (the recommendation went through)"
	                               : guard_name(p->guard));
	if (p->guard_detail)
		fprintf(f, ": %s", p->guard_detail);
	fprintf(f, "\n");
	if (p->decision.guard != p->guard)
		fprintf(f, "  policy guard: %s\n", guard_name(p->decision.guard));

	fprintf(f, "\nresult\n");
	fprintf(f, "  desired:      %d (policy %d; current %d)\n", p->desired, p->decision.desired,
	        capacity);
	if (p->last_action && p->last_action_time > 0) {
		format_age(a, sizeof(a), now - p->last_action_time);
		fprintf(f, "  last action:  %s (%s ago)\n", p->last_action, a);
	} else
		fprintf(f, "  last action:  %s\n", p->last_action ? p->last_action : "none");
	fprintf(f, "  totals:       %llu started, %llu drained\n",
	        (unsigned long long)p->scale_up_total, (unsigned long long)p->scale_down_total);

	fprintf(f, "\nerrors\n");
	fprintf(f, "  consecutive failures: %u\n", p->failures);
	fprintf(f, "  totals:      ");
	for (int k = 0; k < _ERRKIND_MAX; k++)
		fprintf(f, " %s %llu", errkind_to_string((ErrKind)k),
		        (unsigned long long)p->errors[k]);
	fprintf(f, "\n");
	fprintf(f, "  poll latency: %.3f s\n", p->poll_latency);
	if (p->backoff_until > now) {
		format_age(a, sizeof(a), p->backoff_until - now);
		fprintf(f, "  backoff:      workers crash-looping, next start in %s\n", a);
	} else
		fprintf(f, "  backoff:      none\n");
	return 0;
}

/* ---- Prometheus text format 0.0.4 ---------------------------------------------------- */

static void prom_escape(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '\\':
			fputs("\\\\", f);
			break;
		case '"':
			fputs("\\\"", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

static void prom_value(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.15g", v);
}

static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{pool="P"[,KEY="VAL"]} V */
static void prom_sample(FILE *f, const char *name, const char *pool, const char *key,
                        const char *val, double v)
{
	fputs(name, f);
	if (pool || key) {
		fputc('{', f);
		if (pool) {
			fputs("pool=\"", f);
			prom_escape(f, pool);
			fputc('"', f);
		}
		if (key) {
			fprintf(f, "%s%s=\"", pool ? "," : "", key);
			prom_escape(f, val);
			fputc('"', f);
		}
		fputc('}', f);
	}
	fputc(' ', f);
	prom_value(f, v);
	fputc('\n', f);
}

/* One family with one sample per pool. */
#define PER_POOL(f, s, metric, type, help, expr)                                                   \
	do {                                                                                       \
		prom_family(f, metric, type, help);                                                \
		for (size_t _i = 0; _i < (s)->n_pools; _i++) {                                     \
			const PoolStatus *p = &(s)->pools[_i];                                     \
			prom_sample(f, metric, p->name, NULL, NULL, (double)(expr));               \
		}                                                                                  \
	} while (0)

char *status_render_prometheus(const Status *s)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f;

	f = open_memstream(&buf, &size);
	if (!f)
		return NULL;

	prom_family(f, "sluice_build_info", "gauge",
	            "Always 1; the version label is the running sluiced (keda_build_info).");
	prom_sample(f, "sluice_build_info", NULL, "version", s->version ? s->version : "unknown",
	            1);

	prom_family(
	    f, "sluice_queue_depth", "gauge",
	    "Messages in the pool's queues at the last valid reading; absent while unknown.");
	for (size_t i = 0; i < s->n_pools; i++)
		if (s->pools[i].depth_valid)
			prom_sample(f, "sluice_queue_depth", s->pools[i].name, NULL, NULL,
			            s->pools[i].depth);

	PER_POOL(f, s, "sluice_queue_depth_valid", "gauge",
	         "1 if the last depth reading was valid, 0 if it was unknown.", p->depth_valid);

	prom_family(f, "sluice_queue_depth_timestamp_seconds", "gauge",
	            "Unix time of the last valid depth reading; absent if there was none.");
	for (size_t i = 0; i < s->n_pools; i++)
		if (s->pools[i].depth_time > 0)
			prom_sample(f, "sluice_queue_depth_timestamp_seconds", s->pools[i].name,
			            NULL, NULL, s->pools[i].depth_time);

	prom_family(
	    f, "sluice_scaler_metrics_value", "gauge",
	    "The metric value the policy used: the queue depth (keda_scaler_metrics_value).");
	for (size_t i = 0; i < s->n_pools; i++)
		if (s->pools[i].depth_valid)
			prom_sample(f, "sluice_scaler_metrics_value", s->pools[i].name, NULL, NULL,
			            s->pools[i].depth);

	PER_POOL(f, s, "sluice_scaler_active", "gauge",
	         "1 if depth > activation at the last decision (keda_scaler_active).",
	         p->decision.active);
	PER_POOL(f, s, "sluice_target_value", "gauge",
	         "Configured target: messages per worker (the HPA AverageValue target).",
	         p->target);
	PER_POOL(f, s, "sluice_desired_workers", "gauge",
	         "Workers the pool should have now, after all guards.", p->desired);
	PER_POOL(f, s, "sluice_recommended_workers", "gauge",
	         "The policy's recommendation before stabilization and step limits.",
	         p->decision.recommendation);

	prom_family(f, "sluice_workers", "gauge",
	            "Worker containers by state: running, starting (capacity) and draining.");
	for (size_t i = 0; i < s->n_pools; i++) {
		const PoolStatus *p = &s->pools[i];
		prom_sample(f, "sluice_workers", p->name, "state", "running", p->running);
		prom_sample(f, "sluice_workers", p->name, "state", "starting", p->starting);
		prom_sample(f, "sluice_workers", p->name, "state", "draining", p->draining);
	}

	PER_POOL(f, s, "sluice_min_workers", "gauge", "Configured minimum workers.", p->min);
	PER_POOL(f, s, "sluice_max_workers", "gauge", "Configured maximum workers.", p->max);

	prom_family(f, "sluice_scale_actions_total", "counter",
	            "Workers started (direction up) and drained (direction down) since sluiced "
	            "started.");
	for (size_t i = 0; i < s->n_pools; i++) {
		const PoolStatus *p = &s->pools[i];
		prom_sample(f, "sluice_scale_actions_total", p->name, "direction", "up",
		            (double)p->scale_up_total);
		prom_sample(f, "sluice_scale_actions_total", p->name, "direction", "down",
		            (double)p->scale_down_total);
	}

	prom_family(f, "sluice_errors_total", "counter",
	            "Errors by kind since sluiced started (keda_scaler_detail_errors_total).");
	for (size_t i = 0; i < s->n_pools; i++)
		for (int k = 0; k < _ERRKIND_MAX; k++)
			prom_sample(f, "sluice_errors_total", s->pools[i].name, "kind",
			            errkind_to_string((ErrKind)k), (double)s->pools[i].errors[k]);

	PER_POOL(f, s, "sluice_poll_latency_seconds", "gauge",
	         "Duration of the last depth request (keda_scaler_metrics_latency_seconds).",
	         p->poll_latency);
	PER_POOL(f, s, "sluice_failures", "gauge", "Consecutive unknown depth readings.",
	         p->failures);

	prom_family(
	    f, "sluice_guard", "gauge",
	    "1 for the guard holding the pool back, 0 for the others (\"none\" if no guard).");
	for (size_t i = 0; i < s->n_pools; i++)
		for (int g = 0; g < _GUARD_MAX; g++) {
			const char *n = guard_to_string((Guard)g);
			if (n)
				prom_sample(f, "sluice_guard", s->pools[i].name, "guard", n,
				            s->pools[i].guard == (Guard)g);
		}

	prom_family(f, "sluice_backoff_until_timestamp_seconds", "gauge",
	            "Unix time until which crash-looping workers are not restarted; 0 if none.");
	for (size_t i = 0; i < s->n_pools; i++)
		prom_sample(f, "sluice_backoff_until_timestamp_seconds", s->pools[i].name, NULL,
		            NULL, s->pools[i].backoff_until);

	prom_family(f, "sluice_internal_scale_loop_latency_seconds", "gauge",
	            "Drift of the last tick from its schedule "
	            "(keda_internal_scale_loop_latency_seconds).");
	prom_sample(f, "sluice_internal_scale_loop_latency_seconds", NULL, NULL, NULL,
	            s->loop_latency);
	prom_family(f, "sluice_requests_last_tick", "gauge",
	            "HTTP requests sluiced made during the last tick.");
	prom_sample(f, "sluice_requests_last_tick", NULL, NULL, NULL,
	            (double)s->requests_last_tick);
	prom_family(f, "sluice_dry_run", "gauge", "1 if sluiced runs with --dry-run.");
	prom_sample(f, "sluice_dry_run", NULL, NULL, NULL, s->dry_run);
	prom_family(f, "sluice_last_tick_timestamp_seconds", "gauge",
	            "Unix time of the snapshot these metrics come from.");
	prom_sample(f, "sluice_last_tick_timestamp_seconds", NULL, NULL, NULL, s->time);

	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
