/* SPDX-License-Identifier: MIT */
/* RabbitMQ management source. Promises proved here:
 *  - listings recorded from a real RabbitMQ 3.10.8 (tests/fixtures/rabbitmq/) parse into the
 *    requested queues, in the requested order, plain array or paginated object;
 *  - unknown is never zero: an absent queue, a queue "down", a queue listed by name only, zeros
 *    from a queue first seen less than 12 s ago, and implausible counters are all !valid;
 *  - garbage or truncated JSON returns -EBADMSG and never crashes;
 *  - queue names with regex metacharacters are escaped in the name filter;
 *  - rabbit_query goes through Http and sd-event end to end (against a small HTTP server in a
 *    thread of this test): one request, pagination, HTTP errors with a sanitised excerpt that
 *    never holds the password, garbled JSON, timeouts, freeing while in flight.
 * The .c is included to reach its static helpers (chrony style). */
#include "../../src/rabbitmq.c"

#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef FIXTURES
#define FIXTURES "tests/fixtures"
#endif

static char *read_fixture(const char *name, size_t *ret_len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/rabbitmq/%s", FIXTURES, name);
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	char *buf = malloc(1024 * 1024);
	assert_non_null(buf);
	size_t len = fread(buf, 1, 1024 * 1024 - 1, f);
	fclose(f);
	buf[len] = 0;
	if (ret_len)
		*ret_len = len;
	return buf;
}

/* ---- parser on recorded fixtures ---- */

typedef struct {
	const char *name;
	bool valid;
	int64_t ready, unacked;
	const char *why;
} Want;

typedef struct {
	const char *fixture;
	const char *queues[4];
	size_t n;
	int pages;
	Want want[4];
} FixtureCase;

static const FixtureCase fixture_cases[] = {
	{"paginated-two.json", {"celery", "my.queue+1"}, 2, 1,
	 {{"celery", true, 7, 0, NULL}, {"my.queue+1", true, 3, 0, NULL}}},
	/* requested order wins over listing order */
	{"paginated-two.json", {"my.queue+1", "celery"}, 2, 1,
	 {{"my.queue+1", true, 3, 0, NULL}, {"celery", true, 7, 0, NULL}}},
	{"plain-array.json", {"other", "celery", "nosuch"}, 3, 1,
	 {{"other", true, 1, 0, NULL}, {"celery", true, 7, 0, NULL}, {"nosuch", false, 0, 0, "absent"}}},
	{"fresh-0-absent.json", {"celery", "fresh6"}, 2, 1,
	 {{"celery", true, 7, 0, NULL}, {"fresh6", false, 0, 0, "absent"}}},
	{"fresh-1-name-only.json", {"celery", "fresh6"}, 2, 1,
	 {{"celery", true, 7, 0, NULL}, {"fresh6", false, 0, 0, "no statistics yet"}}},
	/* the pure parser cannot tell these zeros from an empty queue: seen_apply does */
	{"fresh-2-zeros.json", {"fresh6"}, 1, 1, {{"fresh6", true, 0, 0, NULL}}},
	{"fresh-3-real.json", {"fresh6"}, 1, 1, {{"fresh6", true, 10, 0, NULL}}},
	{"vhost-team-a.json", {"reports"}, 1, 1, {{"reports", true, 4, 0, NULL}}},
	{"unacked.json", {"celery"}, 1, 1, {{"celery", true, 4, 3, NULL}}},
	{"page-1-of-2.json", {"celery", "other"}, 2, 2,
	 {{"celery", true, 7, 0, NULL}, {"other", false, 0, 0, "absent"}}},
	{"page-2-of-2.json", {"celery", "other"}, 2, 2,
	 {{"celery", false, 0, 0, "absent"}, {"other", true, 1, 0, NULL}}},
};

static void check_depths(const QueueDepth *q, const Want *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(q[i].name, want[i].name);
		assert_int_equal(q[i].valid, want[i].valid);
		if (want[i].valid) {
			assert_int_equal(q[i].ready, want[i].ready);
			assert_int_equal(q[i].unacked, want[i].unacked);
			assert_null(q[i].why);
		} else
			assert_string_equal(q[i].why, want[i].why);
	}
}

static void test_parse_fixtures(void **state)
{
	(void)state;
	for (size_t t = 0; t < ELEMENTSOF(fixture_cases); t++) {
		const FixtureCase *c = &fixture_cases[t];
		size_t len;
		_cleanup_free_ char *json = read_fixture(c->fixture, &len);
		QueueDepth *q = NULL;
		int pages = -1;
		int r = rabbit_parse_queues(json, len, (char *const *)c->queues, c->n, &q, &pages);
		assert_int_equal(r, 0);
		assert_int_equal(pages, c->pages);
		check_depths(q, c->want, c->n);
		queue_depths_free(q, c->n);
	}
}

static void test_parse_error_bodies(void **state)
{
	(void)state;
	/* RabbitMQ's error objects are not listings: never read as "no queues". */
	static const char *const files[] = {"401-login-failed.json", "401-vhost-not-authorised.json",
					    "404-vhost.json"};
	char *queues[] = {"celery"};
	for (size_t t = 0; t < ELEMENTSOF(files); t++) {
		size_t len;
		_cleanup_free_ char *json = read_fixture(files[t], &len);
		QueueDepth *q = NULL;
		assert_int_equal(rabbit_parse_queues(json, len, queues, 1, &q, NULL), -EBADMSG);
		assert_null(q);
	}
}

/* ---- unknown is never zero: counters and states ---- */

typedef struct {
	const char *json;
	bool valid;
	int64_t ready, unacked;
	const char *why;
} ItemCase;

static const ItemCase item_cases[] = {
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":5,\"messages_ready\":3,\"messages_unacknowledged\":2}]", true, 3, 2, NULL},
	{"[{\"name\":\"q\",\"state\":\"flow\",\"messages\":5,\"messages_ready\":3,\"messages_unacknowledged\":2}]", true, 3, 2, NULL},
	{"[{\"name\":\"q\",\"state\":\"idle\",\"messages\":1,\"messages_ready\":1,\"messages_unacknowledged\":0}]", true, 1, 0, NULL},
	/* without state or the total the counters still stand */
	{"[{\"name\":\"q\",\"messages_ready\":3,\"messages_unacknowledged\":2}]", true, 3, 2, NULL},
	{"[{\"name\":\"q\",\"state\":\"down\",\"messages\":5,\"messages_ready\":3,\"messages_unacknowledged\":2}]", false, 0, 0, "down"},
	{"[{\"name\":\"q\",\"state\":\"down\"}]", false, 0, 0, "down"},
	{"[{\"name\":\"q\",\"state\":\"crashed\",\"messages\":0,\"messages_ready\":0,\"messages_unacknowledged\":0}]", false, 0, 0, "down"},
	{"[{\"name\":\"q\",\"state\":\"minority\",\"messages\":0,\"messages_ready\":0,\"messages_unacknowledged\":0}]", false, 0, 0, "down"},
	{"[{\"name\":\"q\"}]", false, 0, 0, "no statistics yet"},
	{"[{\"name\":\"q\",\"state\":\"running\"}]", false, 0, 0, "no statistics yet"},
	{"[{\"name\":\"q\",\"messages\":null,\"messages_ready\":null,\"messages_unacknowledged\":null}]", false, 0, 0, "no statistics yet"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":6,\"messages_ready\":3,\"messages_unacknowledged\":2}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":1,\"messages_ready\":-1,\"messages_unacknowledged\":2}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":5,\"messages_ready\":null,\"messages_unacknowledged\":5}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":5,\"messages_ready\":5}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages_ready\":\"5\",\"messages_unacknowledged\":0}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":5.0,\"messages_ready\":5,\"messages_unacknowledged\":0}]", false, 0, 0, "implausible"},
	{"[{\"name\":\"q\",\"state\":\"running\",\"messages\":-3,\"messages_ready\":0,\"messages_unacknowledged\":0}]", false, 0, 0, "implausible"},
	/* a name that only matches as a prefix, or another type of name, is not our queue */
	{"[{\"name\":\"qq\",\"messages\":5,\"messages_ready\":5,\"messages_unacknowledged\":0},{\"name\":7}]", false, 0, 0, "absent"},
	{"{\"items\":[],\"page_count\":0}", false, 0, 0, "absent"},
};

static void test_judge_items(void **state)
{
	(void)state;
	char *queues[] = {"q"};
	for (size_t t = 0; t < ELEMENTSOF(item_cases); t++) {
		const ItemCase *c = &item_cases[t];
		QueueDepth *q = NULL;
		int r = rabbit_parse_queues(c->json, strlen(c->json), queues, 1, &q, NULL);
		if (r != 0)
			fail_msg("case %zu: r=%d", t, r);
		Want w = {"q", c->valid, c->ready, c->unacked, c->why};
		check_depths(q, &w, 1);
		queue_depths_free(q, 1);
	}
}

static void test_garbage(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", " ", "[", "{", "null", "42", "\"items\"", "{\"items\":{}}", "{\"page_count\":1}",
		"[1,2]", "[[]]", "{\"items\":[\"celery\"]}", "{\"items\":[],\"page_count\":\"2\"}",
		"{\"items\":[],\"page_count\":-1}", "[{\"name\":\"celery\"}", "\xff\xfe[]",
		"[{\"name\":\"celery\",\"name\":\"celery\"}]",
	};
	char *queues[] = {"celery"};
	for (size_t t = 0; t < ELEMENTSOF(bad); t++) {
		QueueDepth *q = NULL;
		int r = rabbit_parse_queues(bad[t], strlen(bad[t]), queues, 1, &q, NULL);
		if (r != -EBADMSG)
			fail_msg("case %zu (%s): r=%d", t, bad[t], r);
		assert_null(q);
	}
	QueueDepth *q = NULL;
	assert_int_equal(rabbit_parse_queues(NULL, 0, queues, 1, &q, NULL), -EBADMSG);

	/* every truncation of a real response */
	size_t len;
	_cleanup_free_ char *json = read_fixture("paginated-two.json", &len);
	while (len > 0 && (json[len - 1] == '\n' || json[len - 1] == ' '))
		len--;
	for (size_t l = 0; l < len; l++) {
		q = NULL;
		assert_int_equal(rabbit_parse_queues(json, l, queues, 1, &q, NULL), -EBADMSG);
	}
}

/* ---- statistics lag: first-seen window ---- */

typedef struct {
	double now;
	const char *vhost;
	const char *json;
	bool valid;
	const char *why;
} SeenStep;

#define ZEROS "[{\"name\":\"q\",\"state\":\"running\",\"messages\":0,\"messages_ready\":0,\"messages_unacknowledged\":0}]"
#define FIVE "[{\"name\":\"q\",\"state\":\"running\",\"messages\":5,\"messages_ready\":5,\"messages_unacknowledged\":0}]"
#define NAMEONLY "[{\"name\":\"q\"}]"
#define NONE "[]"

static const SeenStep seen_steps[] = {
	{100.0, "/", NAMEONLY, false, "no statistics yet"}, /* first sighting: name only */
	{101.0, "/", ZEROS, false, "no statistics yet"},
	{106.0, "/", ZEROS, false, "no statistics yet"},
	{111.9, "/", ZEROS, false, "no statistics yet"},
	{112.0, "/", ZEROS, true, NULL}, /* two stats periods and margin later: really empty */
	{113.0, "/", FIVE, true, NULL},
	{114.0, "/", NONE, false, "absent"}, /* deleted: forgotten */
	{115.0, "/", ZEROS, false, "no statistics yet"}, /* re-created: a new window */
	{120.0, "/", FIVE, true, NULL}, /* non-zero is never held back */
	/* the same name in another vhost is another queue */
	{130.0, "team.a", ZEROS, false, "no statistics yet"},
	{130.0, "/", ZEROS, true, NULL},
	{142.0, "team.a", ZEROS, true, NULL},
	/* not asked about for more than an hour: forgotten, a new window */
	{142.0 + RABBIT_SEEN_FORGET + 1, "team.a", ZEROS, false, "no statistics yet"},
	{142.0 + RABBIT_SEEN_FORGET + 1, "/", ZEROS, false, "no statistics yet"},
};

static void test_first_seen(void **state)
{
	(void)state;
	Seen *seen = NULL;
	size_t n_seen = 0;
	char *queues[] = {"q"};
	for (size_t t = 0; t < ELEMENTSOF(seen_steps); t++) {
		const SeenStep *s = &seen_steps[t];
		QueueDepth *q = NULL;
		assert_int_equal(rabbit_parse_queues(s->json, strlen(s->json), queues, 1, &q, NULL), 0);
		assert_int_equal(seen_apply(&seen, &n_seen, s->vhost, q, 1, s->now), 0);
		if (q[0].valid != s->valid || !streq_ptr(q[0].why, s->why))
			fail_msg("step %zu (t=%.1f %s): valid=%d why=%s", t, s->now, s->vhost,
				 q[0].valid, q[0].why ? q[0].why : "(null)");
		queue_depths_free(q, 1);
	}
	for (size_t j = 0; j < n_seen; j++) {
		free(seen[j].vhost);
		free(seen[j].queue);
	}
	free(seen);
}

/* ---- name filter ---- */

static void test_regex_escape(void **state)
{
	(void)state;
	static const struct {
		const char *names[3];
		size_t n;
		const char *want;
	} cases[] = {
		{{"celery"}, 1, "^(celery)$"},
		{{"celery", "default"}, 2, "^(celery|default)$"},
		{{"my.queue+1"}, 1, "^(my\\.queue\\+1)$"},
		{{"a[b]*", "x$y\\z|^w"}, 2, "^(a\\[b\\]\\*|x\\$y\\\\z\\|\\^w)$"},
		{{"(g){1,2}?", "p/q#r-s"}, 2, "^(\\(g\\)\\{1,2\\}\\?|p\\/q\\#r\\-s)$"},
		{{"üñí code_9"}, 1, "^(üñí code_9)$"},
	};
	for (size_t t = 0; t < ELEMENTSOF(cases); t++) {
		_cleanup_free_ char *re = queues_regex((char *const *)cases[t].names, cases[t].n);
		assert_string_equal(re, cases[t].want);
	}
}

static void test_error_excerpt(void **state)
{
	(void)state;
	char buf[RABBIT_EXCERPT_MAX + 1];
	static const char login[] = "{\"error\":\"not_authorized\",\"reason\":\"Login failed\"}";
	error_excerpt(login, strlen(login), "s3cret", buf, sizeof buf);
	assert_string_equal(buf, "Login failed");

	char big[1000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	error_excerpt(big, strlen(big), NULL, buf, sizeof buf);
	assert_int_equal(strlen(buf), RABBIT_EXCERPT_MAX);

	static const char html[] = "<html>\r\n\tbad s3cret gateway\x01</html>";
	error_excerpt(html, strlen(html), "s3cret", buf, sizeof buf);
	assert_null(strstr(buf, "s3cret"));
	assert_null(strchr(buf, '\n'));
	assert_null(strchr(buf, '\x01'));
	assert_non_null(strstr(buf, "bad ****** gateway"));

	error_excerpt(NULL, 0, NULL, buf, sizeof buf);
	assert_string_equal(buf, "");

	/* A secret cut by the excerpt's end must not leak its first characters: masking comes
	 * before cutting. */
	char cut[RABBIT_EXCERPT_MAX + 32];
	memset(cut, 'y', RABBIT_EXCERPT_MAX - 3);
	strcpy(cut + RABBIT_EXCERPT_MAX - 3, "s3cret tail");
	error_excerpt(cut, strlen(cut), "s3cret", buf, sizeof buf);
	assert_null(strstr(buf, "s3c"));

	/* A server echoing the Authorization header gets its Basic token masked (the token is
	 * base64 of user:password, as readable as the password itself). */
	static const char echo[] = "rejected header Authorization: Basic c2x1aWNlOnMzY3JldA== now";
	const char *secrets[] = {"s3cret", "c2x1aWNlOnMzY3JldA=="};
	error_excerpt_masked(echo, strlen(echo), secrets, 2, buf, sizeof buf);
	assert_null(strstr(buf, "c2x1aWNlOnMzY3JldA"));
	assert_non_null(strstr(buf, "now"));
	error_excerpt(echo, strlen(echo), NULL, buf, sizeof buf);
	assert_null(strstr(buf, "c2x1aWNlOnMzY3JldA"));
}

/* Promise: the Basic token sluice sends is the base64 of user:password (what gets masked). */
static void test_basic_token(void **state)
{
	(void)state;
	char *t = base64("sluice:s3cret");
	assert_string_equal(t, "c2x1aWNlOnMzY3JldA==");
	free(t);
	t = base64("ab");
	assert_string_equal(t, "YWI=");
	free(t);
}

/* ---- end to end: rabbit_query over Http on sd-event against a local server ---- */

typedef struct {
	int status; /* 0: stall (never answer) */
	const char *body;
} Canned;

typedef struct {
	int fd;
	int port;
	pthread_t thread;
	const Canned *canned;
	size_t n_canned;
	size_t served;
	char requests[8][4096];
	pthread_mutex_t lock;
} Server;

static void *server_main(void *userdata)
{
	Server *s = userdata;
	for (;;) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			return NULL;
		char req[4096];
		size_t got = 0;
		while (got < sizeof req - 1) {
			ssize_t k = read(c, req + got, sizeof req - 1 - got);
			if (k <= 0)
				break;
			got += (size_t)k;
			req[got] = 0;
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[got] = 0;
		pthread_mutex_lock(&s->lock);
		size_t i = s->served++;
		if (i < ELEMENTSOF(s->requests))
			snprintf(s->requests[i], sizeof s->requests[i], "%s", req);
		const Canned *cn = i < s->n_canned ? &s->canned[i] : NULL;
		pthread_mutex_unlock(&s->lock);
		if (cn && cn->status == 0) {
			/* stall: keep the connection open until the client gives up */
			char b[64];
			while (read(c, b, sizeof b) > 0)
				;
			close(c);
			continue;
		}
		int status = cn ? cn->status : 500;
		const char *body = cn ? cn->body : "no more canned responses";
		char head[256];
		int hl = snprintf(head, sizeof head,
				  "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
				  "Content-Length: %zu\r\nConnection: close\r\n\r\n",
				  status, strlen(body));
		if (write(c, head, (size_t)hl) < 0 || write(c, body, strlen(body)) < 0) {
			/* client went away */
		}
		close(c);
	}
}

static void server_start(Server *s, const Canned *canned, size_t n)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->lock, NULL);
	s->canned = canned;
	s->n_canned = n;
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(s->fd, 16), 0);
	socklen_t sl = sizeof sa;
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(Server *s)
{
	shutdown(s->fd, SHUT_RDWR);
	pthread_join(s->thread, NULL);
	close(s->fd);
	pthread_mutex_destroy(&s->lock);
}

typedef struct {
	int calls;
	int r;
	char error[256];
	QueueDepth q[4];
	char names[4][32];
	size_t n;
} Result;

static void on_result(int r, const char *error, const QueueDepth *q, size_t n, void *userdata)
{
	Result *res = userdata;
	res->calls++;
	res->r = r;
	snprintf(res->error, sizeof res->error, "%s", error ? error : "");
	res->n = n;
	for (size_t i = 0; i < n && i < 4; i++) {
		res->q[i] = q[i];
		snprintf(res->names[i], sizeof res->names[i], "%s", q[i].name);
		res->q[i].name = res->names[i];
	}
}

typedef struct {
	sd_event *e;
	Http *h;
	Rabbit *rb;
	Server srv;
} Bed;

static void bed_start(Bed *b, const Canned *canned, size_t n, double timeout)
{
	char url[64];
	server_start(&b->srv, canned, n);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/", b->srv.port);
	Config c = {.rmq_url = url, .rmq_user = "sluice", .rmq_password = "s3cret-pw",
		    .rmq_timeout = timeout, .tls_verify = true};
	assert_int_equal(sd_event_new(&b->e), 0);
	assert_int_equal(http_new(b->e, &b->h), 0);
	assert_int_equal(rabbit_new(b->h, &c, &b->rb), 0);
}

static void bed_run(Bed *b, Result *res, double limit)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (res->calls == 0) {
		assert_true(sd_event_run(b->e, 100000) >= 0);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > limit)
			fail_msg("no callback within %.1f s", limit);
	}
}

static void bed_stop(Bed *b)
{
	rabbit_free(b->rb);
	http_free(b->h);
	sd_event_unref(b->e);
	server_stop(&b->srv);
}

static void test_query_pages(void **state)
{
	(void)state;
	_cleanup_free_ char *p1 = read_fixture("page-1-of-2.json", NULL);
	_cleanup_free_ char *p2 = read_fixture("page-2-of-2.json", NULL);
	Canned canned[] = {{200, p1}, {200, p2}};
	Bed b;
	Result res = {0};
	char *queues[] = {"other", "celery", "gone"};

	bed_start(&b, canned, ELEMENTSOF(canned), 3.0);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 3, 1000.0, on_result, &res), 0);
	bed_run(&b, &res, 5.0);
	assert_int_equal(res.calls, 1);
	assert_int_equal(res.r, 0);
	assert_int_equal(res.n, 3);
	Want want[] = {{"other", true, 1, 0, NULL}, {"celery", true, 7, 0, NULL},
		       {"gone", false, 0, 0, "absent"}};
	check_depths(res.q, want, 3);
	assert_int_equal(b.srv.served, 2);
	assert_int_equal(http_requests_total(b.h), 2);
	/* the request shape, and no secret in the URL */
	assert_non_null(strstr(b.srv.requests[0],
			       "GET /api/queues/%2F?page=1&page_size=500&name=%5E%28other%7Ccelery%7Cgone%29%24"
			       "&use_regex=true&columns=name,state,messages,messages_ready,messages_unacknowledged "));
	assert_non_null(strstr(b.srv.requests[1], "GET /api/queues/%2F?page=2&"));
	assert_non_null(strstr(b.srv.requests[0], "Authorization: Basic "));
	assert_null(strstr(b.srv.requests[0], "s3cret"));
	bed_stop(&b);
}

static void test_query_first_seen(void **state)
{
	(void)state;
	_cleanup_free_ char *zeros = read_fixture("fresh-2-zeros.json", NULL);
	Canned canned[] = {{200, zeros}, {200, zeros}};
	Bed b;
	char *queues[] = {"fresh6", "celery"};

	bed_start(&b, canned, ELEMENTSOF(canned), 3.0);
	Result r1 = {0}, r2 = {0};
	assert_int_equal(rabbit_query(b.rb, "/", queues, 2, 50.0, on_result, &r1), 0);
	bed_run(&b, &r1, 5.0);
	Want w1[] = {{"fresh6", false, 0, 0, "no statistics yet"}, {"celery", true, 7, 0, NULL}};
	check_depths(r1.q, w1, 2);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 2, 62.5, on_result, &r2), 0);
	bed_run(&b, &r2, 5.0);
	Want w2[] = {{"fresh6", true, 0, 0, NULL}, {"celery", true, 7, 0, NULL}};
	check_depths(r2.q, w2, 2);
	bed_stop(&b);
}

static void test_query_errors(void **state)
{
	(void)state;
	_cleanup_free_ char *e401 = read_fixture("401-login-failed.json", NULL);
	Canned canned[] = {{401, e401}, {200, "{\"items\":[{\"name\":"}, {503, ""}, {0, NULL}};
	Bed b;
	char *queues[] = {"celery"};

	bed_start(&b, canned, ELEMENTSOF(canned), 0.5);

	Result r = {0};
	assert_int_equal(rabbit_query(b.rb, "/", queues, 1, 1.0, on_result, &r), 0);
	bed_run(&b, &r, 5.0);
	assert_int_equal(r.r, -EIO);
	assert_string_equal(r.error, "HTTP 401 from management API: Login failed");
	assert_int_equal(r.n, 0);

	memset(&r, 0, sizeof r);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 1, 2.0, on_result, &r), 0);
	bed_run(&b, &r, 5.0);
	assert_int_equal(r.r, -EBADMSG);
	assert_string_equal(r.error, "garbled JSON from management API");

	memset(&r, 0, sizeof r);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 1, 3.0, on_result, &r), 0);
	bed_run(&b, &r, 5.0);
	assert_int_equal(r.r, -EIO);
	assert_string_equal(r.error, "HTTP 503 from management API");

	memset(&r, 0, sizeof r);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 1, 4.0, on_result, &r), 0);
	bed_run(&b, &r, 5.0);
	assert_int_equal(r.r, -ETIMEDOUT);
	assert_null(strstr(r.error, "s3cret"));

	assert_int_equal(rabbit_query(b.rb, "/", queues, 0, 5.0, on_result, &r), -EINVAL);
	bed_stop(&b);
}

static void test_query_free_in_flight(void **state)
{
	(void)state;
	Canned canned[] = {{200, "[]"}};
	Bed b;
	Result r = {0};
	char *queues[] = {"celery"};

	bed_start(&b, canned, ELEMENTSOF(canned), 2.0);
	assert_int_equal(rabbit_query(b.rb, "/", queues, 1, 1.0, on_result, &r), 0);
	b.rb = rabbit_free(b.rb);
	/* the request is aborted: no callback, no crash, nothing left in flight */
	assert_int_equal(http_in_flight(b.h), 0);
	for (int i = 0; i < 5; i++)
		assert_true(sd_event_run(b.e, 50000) >= 0);
	assert_int_equal(r.calls, 0);
	bed_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_fixtures),
		cmocka_unit_test(test_parse_error_bodies),
		cmocka_unit_test(test_judge_items),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_first_seen),
		cmocka_unit_test(test_regex_escape),
		cmocka_unit_test(test_error_excerpt),
		cmocka_unit_test(test_basic_token),
		cmocka_unit_test(test_query_pages),
		cmocka_unit_test(test_query_first_seen),
		cmocka_unit_test(test_query_errors),
		cmocka_unit_test(test_query_free_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
