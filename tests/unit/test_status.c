/* SPDX-License-Identifier: MIT */
/* Status snapshot, sluicectl output, Prometheus text and the metrics endpoint.
 * Promises proven here:
 *  - status.json round-trips every field, so sluicectl shows exactly what sluiced knew;
 *  - an unknown depth is shown as "?" and never exported as a number (unknown is never zero);
 *  - the status file is replaced atomically (a reader never sees a half-written file);
 *  - every metric carries HELP and TYPE, label values are escaped, counters exist at zero;
 *  - the metrics endpoint answers GET /metrics, 404s other paths, and a client that connects
 *    and says nothing (or reads slowly) does not delay anyone else. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "metrics.h"
#include "status.h"

#define NOW 1700000000.0

static char *xstrdup(const char *s)
{
	char *r = strdup(s);
	assert_non_null(r);
	return r;
}

/* Pool "celery": everything set, depth known. Pool "reports": depth unknown, error hold. */
static Status *sample_status(void)
{
	Status *s = calloc(1, sizeof(*s));
	PoolStatus *p;

	assert_non_null(s);
	s->time = NOW - 1.25;
	s->version = xstrdup("0.1.0-test");
	s->interval = 5;
	s->dry_run = true;
	s->requests_last_tick = 7;
	s->loop_latency = 0.0125;
	s->n_pools = 2;
	s->pools = calloc(2, sizeof(PoolStatus));
	assert_non_null(s->pools);

	p = &s->pools[0];
	p->name = xstrdup("celery");
	p->source = xstrdup("management");
	p->queues = xstrdup("celery,default");
	p->depth_valid = true;
	p->depth = 42;
	p->depth_time = NOW - 3;
	p->running = 3;
	p->starting = 1;
	p->draining = 2;
	p->desired = 4;
	p->min = 0;
	p->max = 10;
	p->target = 10;
	p->activation = 0.5;
	p->decision = (Decision){.desired = 4,
	                         .recommendation = 5,
	                         .ratio = 1.05,
	                         .active = true,
	                         .guard = GUARD_STEP_LIMIT};
	p->guard = GUARD_STABILIZATION;
	p->guard_detail =
	    xstrdup("scale-up window holds the lowest recommendation 4 of the last 0 s");
	p->last_action = xstrdup("scale up 2 -> 4");
	p->last_action_time = NOW - 12;
	p->failures = 0;
	p->backoff_until = NOW + 30;
	p->scale_up_total = 17;
	p->scale_down_total = 9;
	for (int k = 0; k < _ERRKIND_MAX; k++)
		p->errors[k] = (uint64_t)(k + 1) * 3;
	p->poll_latency = 0.034;

	p = &s->pools[1];
	p->name = xstrdup("reports");
	p->source = xstrdup("amqp");
	p->queues = xstrdup("reports");
	p->depth_valid = false;
	p->depth_time = 0;
	p->depth_error = xstrdup("HTTP 503 from the management API");
	p->running = 2;
	p->desired = 2;
	p->min = 1;
	p->max = 5;
	p->target = 100;
	p->decision = (Decision){.desired = 2, .recommendation = 2, .guard = GUARD_ERROR_HOLD};
	p->guard = GUARD_ERROR_HOLD;
	p->failures = 3;
	p->poll_latency = 3.0;
	return s;
}

static void assert_pool_equal(const PoolStatus *a, const PoolStatus *b)
{
	assert_string_equal(a->name, b->name);
	assert_true(streq_ptr(a->source, b->source));
	assert_true(streq_ptr(a->queues, b->queues));
	assert_int_equal(a->depth_valid, b->depth_valid);
	if (a->depth_valid)
		assert_true(a->depth == b->depth);
	assert_true(a->depth_time == b->depth_time);
	assert_true(streq_ptr(a->depth_error, b->depth_error));
	assert_int_equal(a->running, b->running);
	assert_int_equal(a->starting, b->starting);
	assert_int_equal(a->draining, b->draining);
	assert_int_equal(a->desired, b->desired);
	assert_int_equal(a->min, b->min);
	assert_int_equal(a->max, b->max);
	assert_true(a->target == b->target);
	assert_true(a->activation == b->activation);
	assert_int_equal(a->decision.desired, b->decision.desired);
	assert_int_equal(a->decision.recommendation, b->decision.recommendation);
	assert_true(a->decision.ratio == b->decision.ratio);
	assert_int_equal(a->decision.active, b->decision.active);
	assert_int_equal(a->decision.guard, b->decision.guard);
	assert_int_equal(a->guard, b->guard);
	assert_true(streq_ptr(a->guard_detail, b->guard_detail));
	assert_true(streq_ptr(a->last_action, b->last_action));
	assert_true(a->last_action_time == b->last_action_time);
	assert_int_equal(a->failures, b->failures);
	assert_true(a->backoff_until == b->backoff_until);
	assert_int_equal(a->scale_up_total, b->scale_up_total);
	assert_int_equal(a->scale_down_total, b->scale_down_total);
	for (int k = 0; k < _ERRKIND_MAX; k++)
		assert_int_equal(a->errors[k], b->errors[k]);
	assert_true(a->poll_latency == b->poll_latency);
}

static void assert_status_equal(const Status *a, const Status *b)
{
	assert_true(a->time == b->time);
	assert_true(streq_ptr(a->version, b->version));
	assert_true(a->interval == b->interval);
	assert_int_equal(a->dry_run, b->dry_run);
	assert_int_equal(a->requests_last_tick, b->requests_last_tick);
	assert_true(a->loop_latency == b->loop_latency);
	assert_int_equal(a->n_pools, b->n_pools);
	for (size_t i = 0; i < a->n_pools; i++)
		assert_pool_equal(&a->pools[i], &b->pools[i]);
}

static void test_errkind_names(void **state)
{
	static const char *const names[] = {"http",   "timeout", "connect", "parse",
	                                    "absent", "docker",  "crash"};
	assert_int_equal(ELEMENTSOF(names), _ERRKIND_MAX);
	for (int k = 0; k < _ERRKIND_MAX; k++)
		assert_string_equal(errkind_to_string((ErrKind)k), names[k]);
	assert_null(errkind_to_string(_ERRKIND_MAX));
}

static void test_json_roundtrip_every_field(void **state)
{
	Status *s = sample_status(), *t = NULL;
	char *json, *json2;

	json = status_to_json(s);
	assert_non_null(json);
	/* Guards by name, errors keyed by kind name. */
	assert_non_null(strstr(json, guard_to_string(GUARD_STABILIZATION)));
	assert_non_null(strstr(json, "\"crash\": 21"));
	assert_int_equal(status_from_json(json, &t), 0);
	assert_status_equal(s, t);
	/* Serialising again gives the same text: nothing lost, nothing invented. */
	json2 = status_to_json(t);
	assert_string_equal(json, json2);

	free(json);
	free(json2);
	status_free(s);
	status_free(t);
}

static void test_json_rejects_garbage(void **state)
{
	Status *t = NULL;

	assert_int_equal(status_from_json("", &t), -EBADMSG);
	assert_int_equal(status_from_json("{\"time\": 1", &t), -EBADMSG);
	assert_int_equal(status_from_json("[]", &t), -EBADMSG);
	assert_int_equal(status_from_json("{\"time\": 1}", &t), -EBADMSG); /* no pools */
	assert_int_equal(status_from_json("{\"pools\": [{\"name\": 5}]}", &t), -EBADMSG);
	assert_int_equal(
	    status_from_json("{\"pools\": [{\"name\": \"a\", \"running\": \"3\"}]}", &t), -EBADMSG);
	assert_null(t);
	/* Missing members are zero: a snapshot from an older sluiced still reads. */
	assert_int_equal(status_from_json("{\"pools\": [{\"name\": \"a\"}]}", &t), 0);
	assert_int_equal(t->n_pools, 1);
	assert_false(t->pools[0].depth_valid);
	assert_int_equal(t->pools[0].guard, GUARD_NONE);
	status_free(t);
}

/* noinline: GCC 12 otherwise mistakes the returned buffer for a pointer to the local `buf`
 * (-Wdangling-pointer). */
__attribute__((noinline)) static char *capture_table(const Status *s, double now)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	assert_non_null(f);
	status_print_table(s, now, f);
	fclose(f);
	return buf;
}

/* The line of the table whose first column is POOL. */
static const char *table_line(const char *table, const char *pool, char *buf, size_t size)
{
	const char *l = table;
	size_t n = strlen(pool);

	while (l && *l) {
		const char *e = strchr(l, '\n');
		if (strncmp(l, pool, n) == 0 && l[n] == ' ') {
			size_t len = e ? (size_t)(e - l) : strlen(l);
			assert_true(len < size);
			memcpy(buf, l, len);
			buf[len] = '\0';
			return buf;
		}
		l = e ? e + 1 : NULL;
	}
	fail_msg("no row for %s in:\n%s", pool, table);
	return NULL;
}

static void test_table(void **state)
{
	Status *s = sample_status();
	char *t = capture_table(s, NOW);
	char a[512], b[512], expect[128];
	size_t col_depth, col_guard;
	const char *k[] = {"POOL",    "SOURCE",  "DEPTH",       "AGE",  "CURRENT",
	                   "DESIRED", "MIN/MAX", "LAST ACTION", "GUARD"};

	if (getenv("TEST_STATUS_SHOW")) /* to look at the output by eye */
		fputs(t, stderr);

	/* Header: every column, in order, on the first line. */
	assert_true(strncmp(t, "POOL", 4) == 0);
	for (size_t i = 1; i < ELEMENTSOF(k); i++) {
		assert_non_null(strstr(t, k[i]));
		assert_true(strstr(t, k[i - 1]) < strstr(t, k[i]));
		assert_true(strstr(t, k[i]) < strchr(t, '\n'));
	}
	col_depth = (size_t)(strstr(t, "DEPTH") - t);
	col_guard = (size_t)(strstr(t, "GUARD") - t);

	table_line(t, "celery", a, sizeof(a));
	table_line(t, "reports", b, sizeof(b));
	/* Aligned: DEPTH and GUARD start at the same column in every row. */
	assert_true(strlen(a) > col_guard);
	assert_true(strlen(b) > col_guard);
	assert_true(strncmp(a + col_depth, "42 ", 3) == 0);
	assert_true(strncmp(b + col_depth, "? ", 2) == 0);
	assert_string_equal(a + col_guard, guard_to_string(GUARD_STABILIZATION));
	snprintf(expect, sizeof(expect), "%s (3 failed)", guard_to_string(GUARD_ERROR_HOLD));
	assert_string_equal(b + col_guard, expect);

	assert_non_null(strstr(a, " management "));
	assert_non_null(strstr(a, " 3s "));    /* age of the reading */
	assert_non_null(strstr(a, " 3/1/2 ")); /* running/starting/draining */
	assert_non_null(strstr(a, " 0/10 "));
	assert_non_null(strstr(a, " scale up 2 -> 4 (12s ago) "));
	assert_non_null(strstr(b, " amqp "));
	assert_non_null(strstr(b, " ? "));
	assert_non_null(strstr(b, " - ")); /* no valid reading ever, no action */
	assert_non_null(strstr(b, " 2/0/0 "));
	assert_non_null(strstr(b, " 1/5 "));
	/* Readable in 100 columns (the widest guard text may overhang a little). */
	assert_true(strlen(a) <= 100);
	assert_true(strlen(b) <= 110);
	free(t);

	/* Longer ages, no guard. */
	s->pools[0].depth_time = NOW - 252;
	s->pools[0].last_action_time = NOW - 7500;
	s->pools[0].guard = GUARD_NONE;
	t = capture_table(s, NOW);
	table_line(t, "celery", a, sizeof(a));
	assert_non_null(strstr(a, " 4m12s "));
	assert_non_null(strstr(a, "(2h05m ago)"));
	assert_true(a[strlen(a) - 1] == '-' && a[strlen(a) - 2] == ' ');
	free(t);
	status_free(s);
}

__attribute__((noinline)) static char *capture_explain(const Status *s, const char *pool,
                                                       int expect_r)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	assert_non_null(f);
	assert_int_equal(status_print_explain(s, pool, NOW, f), expect_r);
	fclose(f);
	return buf;
}

static void test_explain(void **state)
{
	Status *s = sample_status();
	char *t;

	t = capture_explain(s, "celery", 0);
	if (getenv("TEST_STATUS_SHOW"))
		fputs(t, stderr);
	assert_non_null(strstr(t, "celery,default"));
	assert_non_null(strstr(t, "42 messages, read 3s ago"));
	assert_non_null(strstr(t, "3 running, 1 starting, 2 draining"));
	assert_non_null(strstr(t, "ceil(42 / 10) = 5"));
	assert_non_null(strstr(t, "42 / (10 x 4) = 1.05"));
	assert_non_null(strstr(t, "within the 10 % tolerance"));
	assert_non_null(strstr(t, "active:       yes"));
	assert_non_null(strstr(t, guard_to_string(GUARD_STABILIZATION)));
	assert_non_null(strstr(t, s->pools[0].guard_detail));
	assert_non_null(strstr(t, "desired:      4"));
	assert_non_null(strstr(t, "scale up 2 -> 4 (12s ago)"));
	assert_non_null(strstr(t, "timeout 6"));
	assert_non_null(strstr(t, "next start in 30s"));
	assert_non_null(strstr(t, "dry run"));
	free(t);

	t = capture_explain(s, "reports", 0);
	assert_non_null(strstr(t, "unknown (HTTP 503 from the management API)"));
	assert_non_null(strstr(t, "unknown is never zero"));
	assert_non_null(strstr(t, guard_to_string(GUARD_ERROR_HOLD)));
	assert_non_null(strstr(t, "consecutive failures: 3"));
	assert_null(strstr(t, "ceil("));
	free(t);

	t = capture_explain(s, "nope", -ENOENT);
	assert_true(t == NULL || t[0] == '\0');
	free(t);
	status_free(s);
}

/* Every sample's family has # HELP and # TYPE before it. */
static void assert_prometheus_well_formed(const char *text)
{
	_cleanup_free_ char *copy = xstrdup(text);
	char *save = NULL, *line;
	char seen_help[64][80], seen_type[64][80];
	size_t n_help = 0, n_type = 0;

	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[80];
		size_t len;
		bool help = false, type = false;

		if (strncmp(line, "# HELP ", 7) == 0) {
			assert_true(n_help < 64);
			sscanf(line + 7, "%79s", seen_help[n_help++]);
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char kind[16];
			assert_true(n_type < 64);
			assert_int_equal(sscanf(line + 7, "%79s %15s", seen_type[n_type++], kind),
			                 2);
			assert_true(streq(kind, "gauge") || streq(kind, "counter"));
			if (streq(kind, "counter"))
				assert_non_null(strstr(seen_type[n_type - 1], "_total"));
			continue;
		}
		assert_true(line[0] != '#');
		len = strcspn(line, "{ ");
		assert_true(len > 0 && len < sizeof(name));
		memcpy(name, line, len);
		name[len] = '\0';
		for (size_t i = 0; i < n_help; i++)
			help = help || streq(seen_help[i], name);
		for (size_t i = 0; i < n_type; i++)
			type = type || streq(seen_type[i], name);
		if (!help || !type)
			fail_msg("sample without HELP/TYPE: %s", line);
	}
	assert_int_equal(n_help, n_type);
}

static void test_prometheus(void **state)
{
	Status *s = sample_status();
	char *t, expect[256];

	free(s->pools[1].name);
	s->pools[1].name = xstrdup("we\"ird\\pool\nx");
	t = status_render_prometheus(s);
	assert_non_null(t);
	assert_prometheus_well_formed(t);

	assert_non_null(strstr(t, "sluice_build_info{version=\"0.1.0-test\"} 1\n"));
	assert_non_null(strstr(t, "sluice_queue_depth{pool=\"celery\"} 42\n"));
	assert_non_null(strstr(t, "sluice_queue_depth_valid{pool=\"celery\"} 1\n"));
	assert_non_null(strstr(t, "sluice_scaler_metrics_value{pool=\"celery\"} 42\n"));
	assert_non_null(strstr(t, "sluice_scaler_active{pool=\"celery\"} 1\n"));
	assert_non_null(strstr(t, "sluice_desired_workers{pool=\"celery\"} 4\n"));
	assert_non_null(strstr(t, "sluice_workers{pool=\"celery\",state=\"running\"} 3\n"));
	assert_non_null(strstr(t, "sluice_workers{pool=\"celery\",state=\"starting\"} 1\n"));
	assert_non_null(strstr(t, "sluice_workers{pool=\"celery\",state=\"draining\"} 2\n"));
	assert_non_null(strstr(t, "sluice_min_workers{pool=\"celery\"} 0\n"));
	assert_non_null(strstr(t, "sluice_max_workers{pool=\"celery\"} 10\n"));
	assert_non_null(
	    strstr(t, "sluice_scale_actions_total{pool=\"celery\",direction=\"up\"} 17\n"));
	assert_non_null(
	    strstr(t, "sluice_scale_actions_total{pool=\"celery\",direction=\"down\"} 9\n"));
	assert_non_null(strstr(t, "sluice_errors_total{pool=\"celery\",kind=\"http\"} 3\n"));
	assert_non_null(strstr(t, "sluice_poll_latency_seconds{pool=\"celery\"} 0.034\n"));
	assert_non_null(strstr(t, "sluice_failures{pool=\"celery\"} 0\n"));
	snprintf(expect, sizeof(expect), "sluice_guard{pool=\"celery\",guard=\"%s\"} 1\n",
	         guard_to_string(GUARD_STABILIZATION));
	assert_non_null(strstr(t, expect));
	snprintf(expect, sizeof(expect), "sluice_guard{pool=\"celery\",guard=\"%s\"} 0\n",
	         guard_to_string(GUARD_NONE));
	assert_non_null(strstr(t, expect));
	assert_non_null(strstr(t, "sluice_internal_scale_loop_latency_seconds 0.0125\n"));

	/* The odd pool: escaped label, unknown depth omitted, zero counters present. */
#define ODD "pool=\"we\\\"ird\\\\pool\\nx\""
	assert_null(strstr(t, "sluice_queue_depth{" ODD));
	assert_null(strstr(t, "sluice_scaler_metrics_value{" ODD));
	assert_non_null(strstr(t, "sluice_queue_depth_valid{" ODD "} 0\n"));
	assert_non_null(strstr(t, "sluice_scale_actions_total{" ODD ",direction=\"up\"} 0\n"));
	assert_non_null(strstr(t, "sluice_scale_actions_total{" ODD ",direction=\"down\"} 0\n"));
	for (int k = 0; k < _ERRKIND_MAX; k++) {
		snprintf(expect, sizeof(expect), "sluice_errors_total{" ODD ",kind=\"%s\"} 0\n",
		         errkind_to_string((ErrKind)k));
		assert_non_null(strstr(t, expect));
	}
	assert_non_null(strstr(t, "sluice_failures{" ODD "} 3\n"));
	assert_null(strstr(t, "NaN"));
	/* A raw newline inside a label would split the sample. */
	assert_null(strstr(t, "we\"ird"));
	free(t);
	status_free(s);
}

static void test_write_read(void **state)
{
	char dir[] = "/tmp/sluice-test-XXXXXX", path[256], tmp[256];
	Status *s = sample_status(), *t = NULL;
	struct stat st1, st2;
	mode_t old_umask;
	int fd;
	char c;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/status.json", dir);
	snprintf(tmp, sizeof(tmp), "%s/status.json.tmp", dir);

	assert_int_equal(status_read(dir, &t), -ENOENT);

	old_umask = umask(077); /* as under a hardened unit: the file must still be 0644 */
	assert_int_equal(status_write(s, dir), 0);
	umask(old_umask);
	assert_int_equal(stat(path, &st1), 0);
	assert_int_equal(st1.st_mode & 07777, 0644);
	assert_int_equal(access(tmp, F_OK), -1);

	assert_int_equal(status_read(dir, &t), 0);
	assert_status_equal(s, t);
	status_free(t);
	t = NULL;

	/* A reader holding the old file keeps a complete old file: replaced, not rewritten. */
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	s->pools[0].desired = 9;
	assert_int_equal(status_write(s, dir), 0);
	assert_int_equal(stat(path, &st2), 0);
	assert_true(st1.st_ino != st2.st_ino);
	assert_int_equal(read(fd, &c, 1), 1);
	assert_int_equal(c, '{');
	close(fd);
	assert_int_equal(status_read(dir, &t), 0);
	assert_int_equal(t->pools[0].desired, 9);
	status_free(t);
	t = NULL;

	/* Garbage is reported as such. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"po", 4), 4);
	close(fd);
	assert_int_equal(status_read(dir, &t), -EBADMSG);

	/* Unwritable directory: an error, and no stray file. */
	assert_true(status_write(s, "/nonexistent-sluice-dir") < 0);

	unlink(path);
	rmdir(dir);
	status_free(s);
}

/* ---- the metrics endpoint ---------------------------------------------------------------- */

static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static int connect_to(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

typedef struct {
	int port;
	const char *request;
	int delay_ms; /* before reading: a slow reader */
	char *response;
	size_t len;
	atomic_bool done;
} Client;

/* A blocking client: the loop under test runs in the main thread. cmocka's asserts are not
 * thread-safe, so the thread only records; the main thread checks. */
static void *client_thread(void *userdata)
{
	Client *c = userdata;
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)c->port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	size_t cap = 65536;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	c->response = malloc(cap);
	c->len = 0;
	if (fd < 0 || !c->response || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	if (send(fd, c->request, strlen(c->request), MSG_NOSIGNAL) < 0)
		goto out;
	if (c->delay_ms > 0)
		usleep((useconds_t)c->delay_ms * 1000);
	for (;;) {
		ssize_t k;
		if (cap - c->len < 4096) {
			char *n = realloc(c->response, cap * 2);
			if (!n)
				break;
			c->response = n;
			cap *= 2;
		}
		k = recv(fd, c->response + c->len, cap - c->len - 1, 0);
		if (k <= 0)
			break;
		c->len += (size_t)k;
	}
	c->response[c->len] = '\0';
out:
	if (fd >= 0)
		close(fd);
	atomic_store(&c->done, true);
	return NULL;
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run the loop until the client is done; returns how long it took. */
static double run_client(sd_event *e, Client *c)
{
	pthread_t t;
	double start = mono();

	atomic_init(&c->done, false);
	assert_int_equal(pthread_create(&t, NULL, client_thread, c), 0);
	while (!atomic_load(&c->done) && mono() - start < 10)
		assert_true(sd_event_run(e, 50 * 1000) >= 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(atomic_load(&c->done));
	return mono() - start;
}

static const char *body_of(const Client *c)
{
	const char *b = strstr(c->response, "\r\n\r\n");
	assert_non_null(b);
	return b + 4;
}

static void test_metrics_serves_text(void **state)
{
	sd_event *e = NULL;
	Metrics *m = NULL;
	char *err = NULL, listen_addr[64];
	Client c = {0};
	int port = free_port();

	assert_int_equal(sd_event_new(&e), 0);
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", port);
	assert_int_equal(metrics_new(e, listen_addr, &m, &err), 0);
	assert_null(err);
	assert_int_equal(metrics_update(m, "sluice_up 1\n"), 0);

	c.port = port;
	c.request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
	run_client(e, &c);
	assert_true(strncmp(c.response, "HTTP/1.0 200 OK\r\n", 17) == 0);
	assert_non_null(strstr(c.response, "Content-Type: text/plain; version=0.0.4"));
	assert_non_null(strstr(c.response, "Content-Length: 12\r\n"));
	assert_string_equal(body_of(&c), "sluice_up 1\n");
	free(c.response);

	/* The text is replaced by the next update. */
	assert_int_equal(metrics_update(m, "sluice_up 2\n"), 0);
	c.request = "GET / HTTP/1.0\r\n\r\n";
	run_client(e, &c);
	assert_string_equal(body_of(&c), "sluice_up 2\n");
	free(c.response);

	c.request = "GET /nope HTTP/1.0\r\n\r\n";
	run_client(e, &c);
	assert_true(strncmp(c.response, "HTTP/1.0 404 ", 13) == 0);
	assert_null(strstr(c.response, "sluice_up"));
	free(c.response);

	c.request = "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
	run_client(e, &c);
	assert_true(strncmp(c.response, "HTTP/1.0 405 ", 13) == 0);
	assert_non_null(strstr(c.response, "Allow: GET, HEAD\r\n"));
	free(c.response);

	c.request = "HEAD /metrics HTTP/1.0\r\n\r\n";
	run_client(e, &c);
	assert_true(strncmp(c.response, "HTTP/1.0 200 OK\r\n", 17) == 0);
	assert_string_equal(body_of(&c), "");
	free(c.response);

	/* A request head over 8 KiB is refused, not buffered forever. */
	{
		char *big = malloc(10000);
		assert_non_null(big);
		memcpy(big, "GET /metrics HTTP/1.0\r\nX: ", 26);
		memset(big + 26, 'a', 10000 - 27);
		big[9999] = '\0';
		c.request = big;
		run_client(e, &c);
		assert_true(strncmp(c.response, "HTTP/1.0 431 ", 13) == 0);
		free(c.response);
		free(big);
	}

	metrics_free(m);
	sd_event_unref(e);
}

static void test_metrics_slow_clients_do_not_block(void **state)
{
	sd_event *e = NULL;
	Metrics *m = NULL;
	char *err = NULL, listen_addr[64], *big;
	Client c = {0};
	int port = free_port(), silent, partial;
	const size_t big_len = 4 * 1024 * 1024;
	double took, start;
	bool silent_closed = false, partial_closed = false;

	assert_int_equal(sd_event_new(&e), 0);
	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", port);
	assert_int_equal(metrics_new(e, listen_addr, &m, &err), 0);

	/* A large text, so the answer cannot go out in one write. */
	big = malloc(big_len + 1);
	assert_non_null(big);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (i % 64 == 63) ? '\n' : 'x';
	big[big_len] = '\0';
	assert_int_equal(metrics_update(m, big), 0);

	/* One client connects and sends nothing; another sends half a request. */
	silent = connect_to(port);
	partial = connect_to(port);
	assert_int_equal(send(partial, "GET /metr", 9, 0), 9);
	start = mono();

	/* A third, which reads slowly, still gets the whole text promptly. */
	c.port = port;
	c.request = "GET /metrics HTTP/1.0\r\n\r\n";
	c.delay_ms = 300;
	took = run_client(e, &c);
	assert_true(took < 3.0);
	assert_true(c.len > big_len);
	assert_int_equal(strlen(body_of(&c)), big_len);
	assert_true(memcmp(body_of(&c), big, big_len) == 0);
	free(c.response);

	/* And a fourth, while the first two still hang. */
	c.delay_ms = 0;
	c.request = "GET /nope HTTP/1.0\r\n\r\n";
	took = run_client(e, &c);
	assert_true(took < 1.0);
	assert_true(strncmp(c.response, "HTTP/1.0 404 ", 13) == 0);
	free(c.response);

	/* The silent ones are cut off at their deadline (5 s), not kept forever. */
	while ((!silent_closed || !partial_closed) && mono() - start < 8) {
		struct pollfd p[2] = {{.fd = silent, .events = POLLIN},
		                      {.fd = partial, .events = POLLIN}};
		char buf[64];

		assert_true(sd_event_run(e, 50 * 1000) >= 0);
		assert_true(poll(p, 2, 0) >= 0);
		if (p[0].revents && recv(silent, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			silent_closed = true;
		if (p[1].revents && recv(partial, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			partial_closed = true;
	}
	assert_true(silent_closed);
	assert_true(partial_closed);
	assert_true(mono() - start >= 4.5);
	close(silent);
	close(partial);

	free(big);
	metrics_free(m);
	sd_event_unref(e);
}

static void test_metrics_listen_errors(void **state)
{
	static const char *const bad[] = {
	    "127.0.0.1",     "127.0.0.1:",     "127.0.0.1:65536", "127.0.0.1:-1",
	    "127.0.0.1:80x", "example.com:80", "[::1]9687",       "[::1:9687",
	    "::1:9687",      "[127.0.0.1]:80", "300.1.1.1:80",
	};
	sd_event *e = NULL;
	Metrics *m = NULL, *m2 = NULL;
	char *err = NULL, listen_addr[64], expect[128];
	int port = free_port(), r;

	assert_int_equal(sd_event_new(&e), 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(metrics_new(e, bad[i], &m, &err), -EINVAL);
		assert_non_null(err);
		assert_true(strncmp(err, "metrics.listen ", 15) == 0);
		assert_non_null(strstr(err, bad[i]));
		free(err);
		err = NULL;
	}

	snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", port);
	assert_int_equal(metrics_new(e, listen_addr, &m, &err), 0);
	assert_int_equal(metrics_new(e, listen_addr, &m2, &err), -EADDRINUSE);
	snprintf(expect, sizeof(expect), "metrics.listen %s: Address already in use", listen_addr);
	assert_string_equal(err, expect);
	free(err);
	err = NULL;
	metrics_free(m);

	assert_int_equal(metrics_new(e, "localhost:0", &m, &err), 0);
	metrics_free(m);
	r = metrics_new(e, "[::1]:0", &m, &err);
	if (r == 0)
		metrics_free(m);
	else { /* no IPv6 in this sandbox */
		assert_true(r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT);
		free(err);
	}
	sd_event_unref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_errkind_names),
	    cmocka_unit_test(test_json_roundtrip_every_field),
	    cmocka_unit_test(test_json_rejects_garbage),
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_explain),
	    cmocka_unit_test(test_prometheus),
	    cmocka_unit_test(test_write_read),
	    cmocka_unit_test(test_metrics_serves_text),
	    cmocka_unit_test(test_metrics_slow_clients_do_not_block),
	    cmocka_unit_test(test_metrics_listen_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
