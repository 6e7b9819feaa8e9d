/* SPDX-License-Identifier: MIT */
/* Docker client and HTTP glue.
 *  - parsers on fixtures recorded from a real dockerd 20.10 (tests/fixtures/docker/);
 *  - garbage and truncated JSON never crash and return -EINVAL;
 *  - the create body (labels, top-level StopSignal/StopTimeout, HostConfig) and substitution;
 *  - version comparison and negotiation;
 *  - Http through a real sd-event loop against a small HTTP server in a thread of this test
 *    (TCP on 127.0.0.1 and a Unix socket): no blocking, timeouts, size limits, concurrency;
 *  - Docker verbs against the same server on its Unix socket (URLs, status mapping,
 *    negotiation, re-negotiation after a connection failure). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "docker.h"
#include "http.h"
#include "macro.h"

#ifndef FIXTURES
#define FIXTURES "tests/fixtures"
#endif

static char *read_fixture(const char *name, size_t *ret_len)
{
	char path[512];
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/docker/%s", FIXTURES, name);
	f = fopen(path, "re");
	assert_non_null(f);
	buf = malloc(1024 * 1024);
	assert_non_null(buf);
	len = fread(buf, 1, 1024 * 1024 - 1, f);
	fclose(f);
	buf[len] = 0;
	if (ret_len)
		*ret_len = len;
	return buf;
}

static double monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ================= parsers on recorded fixtures ================= */

typedef struct {
	const char *name;
	const char *state;
	int exit_code;
	const char *pool;
	bool managed;
} ListRow;

static const ListRow list_rows[] = {
	{ "celery-killed", "exited", 137, "celery", true },
	{ "celery-exit3", "exited", 3, "celery", true },
	{ "celery-running", "running", -1, "celery", true },
	{ "celery-created", "created", -1, "celery", true },
	{ "other-app", "running", -1, NULL, false },
};

static const ListRow *find_row(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(list_rows); i++)
		if (streq(list_rows[i].name, name))
			return &list_rows[i];
	return NULL;
}

static void check_list_fixture(const char *file, size_t expect_n, bool expect_unmanaged)
{
	_cleanup_free_ char *json = NULL;
	DockerContainer *list = NULL;
	size_t len, n = 0;
	bool saw_unmanaged = false;

	json = read_fixture(file, &len);
	assert_int_equal(docker_parse_list(json, len, &list, &n), 0);
	assert_int_equal(n, expect_n);
	for (size_t i = 0; i < n; i++) {
		const ListRow *row = find_row(list[i].name);

		assert_non_null(row);
		assert_int_equal(strlen(list[i].id), 64);
		assert_string_equal(list[i].state, row->state);
		assert_int_equal(list[i].exit_code, row->exit_code);
		assert_int_equal(list[i].managed, row->managed);
		assert_true(streq_ptr(list[i].pool, row->pool));
		if (row->managed)
			assert_string_equal(list[i].spec, "0123456789abcdef");
		else
			saw_unmanaged = true;
		assert_int_equal(list[i].created, 1796415009); /* 2026-12-04T20:10:09Z */
		assert_true(list[i].started_at == 0 && list[i].finished_at == 0);
	}
	assert_int_equal(saw_unmanaged, expect_unmanaged);
	docker_containers_free(list, n);
}

static void test_parse_list_managed_fixture(void **state)
{
	check_list_fixture("list-managed.json", 4, false);
}

static void test_parse_list_all_fixture_marks_unmanaged(void **state)
{
	check_list_fixture("list-all.json", 5, true);
}

static void test_parse_list_empty(void **state)
{
	DockerContainer *list = NULL;
	size_t n = 99;

	assert_int_equal(docker_parse_list("[]", 2, &list, &n), 0);
	assert_int_equal(n, 0);
	docker_containers_free(list, n);
}

typedef struct {
	const char *file;
	const char *name;
	const char *state;
	int exit_code;
	double started_at;  /* 0 = zero time; otherwise Unix seconds (checked to 1 ms) */
	double finished_at;
} InspectRow;

/* Times from the fixtures: 2026-12-04T20:10:10.560628614Z etc. (1796415010 = 20:10:10Z) */
static const InspectRow inspect_rows[] = {
	{ "inspect-created.json", "celery-created", "created", 0, 0, 0 },
	{ "inspect-running.json", "celery-running", "running", 0, 1796415010.23372198, 0 },
	{ "inspect-exit3.json", "celery-exit3", "exited", 3, 1796415010.560628614,
	  1796415010.565191974 },
	{ "inspect-killed.json", "celery-killed", "exited", 137, 1796415010.902794893,
	  1796415013.236535131 },
};

static void test_parse_inspect_fixtures(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(inspect_rows); i++) {
		const InspectRow *row = &inspect_rows[i];
		_cleanup_free_ char *json = NULL;
		DockerContainer c = {};
		size_t len;

		json = read_fixture(row->file, &len);
		assert_int_equal(docker_parse_inspect(json, len, &c), 0);
		assert_string_equal(c.name, row->name);
		assert_string_equal(c.state, row->state);
		assert_int_equal(c.exit_code, row->exit_code);
		assert_true(c.managed);
		assert_string_equal(c.pool, "celery");
		assert_string_equal(c.spec, "0123456789abcdef");
		assert_int_equal(strlen(c.id), 64);
		assert_int_equal(c.created, 1796415009);
		assert_true(fabs(c.started_at - row->started_at) < 1e-3);
		assert_true(fabs(c.finished_at - row->finished_at) < 1e-3);
		docker_container_clear(&c);
	}
}

static void test_parse_inspect_time_offsets(void **state)
{
	static const struct {
		const char *t;
		int r;
		double v;
	} rows[] = {
		{ "2026-12-04T20:10:10Z", 0, 1796415010 },
		{ "2026-12-04T21:10:10.5+01:00", 0, 1796415010.5 },
		{ "2026-12-04T19:10:10-01:00", 0, 1796415010 },
		{ "0001-01-01T00:00:00Z", 0, 0 },
		{ "2026-12-04 20:10:10", -EINVAL, 0 },
		{ "yesterday", -EINVAL, 0 },
		{ "2026-12-04T20:10:10.Z", -EINVAL, 0 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		_cleanup_free_ char *json = NULL;
		DockerContainer c = {};

		assert_true(asprintf(&json,
				     "{\"Id\":\"abc\",\"Name\":\"/x\",\"Created\":\"%s\",\"State\":"
				     "{\"Status\":\"exited\",\"ExitCode\":1,\"StartedAt\":\"%s\","
				     "\"FinishedAt\":\"0001-01-01T00:00:00Z\"},\"Config\":{}}",
				     rows[i].t, rows[i].t) > 0);
		assert_int_equal(docker_parse_inspect(json, strlen(json), &c), rows[i].r);
		if (rows[i].r == 0) {
			assert_true(fabs(c.started_at - rows[i].v) < 1e-6);
			assert_false(c.managed);
			assert_null(c.pool);
		}
		docker_container_clear(&c);
	}
}

static const char *const garbage[] = {
	"",
	"   ",
	"[",
	"{}",
	"null",
	"42",
	"\"string\"",
	"[1]",
	"[null]",
	"[{}]",
	"[{\"Id\":1}]",
	"[{\"Id\":\"a\",\"Names\":[],\"State\":\"running\",\"Created\":1}]",
	"[{\"Id\":\"a\",\"Names\":[\"/a\"],\"State\":\"running\",\"Created\":\"1\"}]",
	"[{\"Id\":\"a\",\"Names\":[\"/a\"],\"State\":\"running\",\"Created\":1,\"Labels\":[]}]",
	"[{\"Id\":\"a\",\"Names\":[5],\"State\":\"running\",\"Created\":1}]",
	"\xff\xfe garbage",
	"<html>502 Bad Gateway</html>",
};

static void test_parse_garbage_is_einval(void **state)
{
	for (size_t i = 0; i < ELEMENTSOF(garbage); i++) {
		DockerContainer *list = (DockerContainer *)0x1, c = {};
		size_t n = 7;

		assert_int_equal(docker_parse_list(garbage[i], strlen(garbage[i]), &list, &n),
				 -EINVAL);
		assert_true(list == (DockerContainer *)0x1 && n == 7); /* untouched on error */
		assert_int_equal(docker_parse_inspect(garbage[i], strlen(garbage[i]), &c), -EINVAL);
	}
}

/* Every proper prefix of a real answer is invalid JSON: no crash, no leak, -EINVAL. */
static void test_parse_truncated_fixtures_are_einval(void **state)
{
	static const char *const files[] = { "list-all.json", "inspect-killed.json" };

	for (size_t f = 0; f < ELEMENTSOF(files); f++) {
		_cleanup_free_ char *json = NULL;
		size_t len;

		json = read_fixture(files[f], &len);
		while (len > 0 && (json[len - 1] == '\n' || json[len - 1] == ' '))
			len--;
		for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 37)) {
			DockerContainer *list = NULL, c = {};
			size_t n = 0;

			if (f == 0)
				assert_int_equal(docker_parse_list(json, cut, &list, &n), -EINVAL);
			else
				assert_int_equal(docker_parse_inspect(json, cut, &c), -EINVAL);
		}
	}
}

/* ================= create body and substitution ================= */

static void test_substitute_table(void **state)
{
	static const struct {
		const char *in, *out;
	} rows[] = {
		{ "", "" },
		{ "plain text, no braces", "plain text, no braces" },
		{ "{name}@%h", "celery-7@%h" },
		{ "-n {name} -Q {pool}", "-n celery-7 -Q celery" },
		{ "{index}", "7" },
		{ "{name}{name}-{index}{index}", "celery-7celery-7-77" },
		{ "{foo} {Name} {name", "{foo} {Name} {name" },
		{ "{{name}}", "{celery-7}" },
		{ "A={pool}_{index}", "A=celery_7" },
		{ "{}{", "{}{" },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		_cleanup_free_ char *s = docker_substitute(rows[i].in, "celery-7", "celery", 7);

		assert_non_null(s);
		assert_string_equal(s, rows[i].out);
	}
}

static char *cmd_v[] = { "celery", "-A", "tasks", "worker", "-n", "{name}@%h", "-Q", "{pool}",
			 NULL };
static char *env_v[] = { "WORKER_INDEX={index}", "LITERAL=x", "TWICE={name}-{name}",
			 "UNKNOWN={foo}", NULL };
static char *vol_v[] = { "/srv/app:/app:ro", NULL };
static char *lk[] = { "team", "io.sluice.pool" };
static char *lv[] = { "data", "evil" };

static PoolConfig full_pool(void)
{
	PoolConfig p = {
		.name = "celery",
		.stop_signal = "SIGTERM",
		.stop_timeout = 2.5,
		.container =
			{
				.image = "celery-demo:latest",
				.command = cmd_v,
				.n_command = 8,
				.env = env_v,
				.n_env = 4,
				.network = "host",
				.memory = 512 * 1024 * 1024,
				.cpus = 0.5,
				.volumes = vol_v,
				.n_volumes = 1,
				.label_keys = lk,
				.label_values = lv,
				.n_labels = 2,
				.user = "1000:1000",
				.init = true,
			},
	};
	strcpy(p.spec_hash, "00112233aabbccdd");
	return p;
}

static void test_create_body_full(void **state)
{
	PoolConfig p = full_pool();
	_cleanup_free_ char *body = docker_create_body(&p, "celery-3", 3);
	json_auto_t *j = NULL;
	json_t *labels, *host, *cmd, *env;

	assert_non_null(body);
	j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "Image")), "celery-demo:latest");

	labels = json_object_get(j, "Labels");
	assert_string_equal(json_string_value(json_object_get(labels, "io.sluice.pool")), "celery");
	assert_string_equal(json_string_value(json_object_get(labels, "io.sluice.managed")), "true");
	assert_string_equal(json_string_value(json_object_get(labels, "io.sluice.spec")),
			    "00112233aabbccdd");
	assert_string_equal(json_string_value(json_object_get(labels, "team")), "data");
	assert_int_equal(json_object_size(labels), 4);

	/* Top level, not HostConfig (the API ignores them there). */
	assert_string_equal(json_string_value(json_object_get(j, "StopSignal")), "SIGTERM");
	assert_true(json_is_integer(json_object_get(j, "StopTimeout")));
	assert_int_equal(json_integer_value(json_object_get(j, "StopTimeout")), 3); /* ceil 2.5 */
	assert_string_equal(json_string_value(json_object_get(j, "User")), "1000:1000");

	host = json_object_get(j, "HostConfig");
	assert_non_null(host);
	assert_null(json_object_get(host, "StopSignal"));
	assert_null(json_object_get(host, "StopTimeout"));
	assert_string_equal(json_string_value(json_object_get(host, "NetworkMode")), "host");
	assert_int_equal(json_integer_value(json_object_get(host, "Memory")), 536870912);
	assert_int_equal(json_integer_value(json_object_get(host, "NanoCpus")), 500000000);
	assert_true(json_is_true(json_object_get(host, "Init")));
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(host, "RestartPolicy"), "Name")),
			    "no");
	assert_string_equal(json_string_value(json_array_get(json_object_get(host, "Binds"), 0)),
			    "/srv/app:/app:ro");
	assert_null(json_object_get(j, "Hostname"));

	cmd = json_object_get(j, "Cmd");
	assert_int_equal(json_array_size(cmd), 8);
	assert_string_equal(json_string_value(json_array_get(cmd, 0)), "celery");
	assert_string_equal(json_string_value(json_array_get(cmd, 5)), "celery-3@%h");
	assert_string_equal(json_string_value(json_array_get(cmd, 7)), "celery");

	env = json_object_get(j, "Env");
	assert_int_equal(json_array_size(env), 4);
	assert_string_equal(json_string_value(json_array_get(env, 0)), "WORKER_INDEX=3");
	assert_string_equal(json_string_value(json_array_get(env, 1)), "LITERAL=x");
	assert_string_equal(json_string_value(json_array_get(env, 2)), "TWICE=celery-3-celery-3");
	assert_string_equal(json_string_value(json_array_get(env, 3)), "UNKNOWN={foo}");
}

static void test_create_body_minimal_omits_optionals(void **state)
{
	PoolConfig p = { .name = "p", .container = { .image = "busybox" } };
	_cleanup_free_ char *body = NULL;
	json_auto_t *j = NULL;
	json_t *host;

	strcpy(p.spec_hash, "ffffffffffffffff");
	body = docker_create_body(&p, "p-0", 0);
	assert_non_null(body);
	j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_null(json_object_get(j, "Cmd")); /* image default */
	assert_null(json_object_get(j, "Env"));
	assert_null(json_object_get(j, "User"));
	assert_null(json_object_get(j, "StopSignal"));
	assert_int_equal(json_integer_value(json_object_get(j, "StopTimeout")), 0);
	host = json_object_get(j, "HostConfig");
	assert_null(json_object_get(host, "NetworkMode"));
	assert_null(json_object_get(host, "Memory"));
	assert_null(json_object_get(host, "NanoCpus"));
	assert_null(json_object_get(host, "Binds"));
	assert_true(json_is_false(json_object_get(host, "Init")));
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(host, "RestartPolicy"), "Name")),
			    "no");
	assert_int_equal(json_object_size(json_object_get(j, "Labels")), 3);
}

/* ================= versions ================= */

static void test_version_cmp_numeric(void **state)
{
	static const struct {
		const char *a, *b;
		int sign;
	} rows[] = {
		{ "1.41", "1.41", 0 }, { "1.9", "1.41", -1 },  { "1.41", "1.9", 1 },
		{ "1.41", "1.42", -1 }, { "1.47", "1.41", 1 }, { "2.0", "1.99", 1 },
		{ "1.41", "1.41.0", 0 }, { "1.41.1", "1.41", 1 }, { "1.100", "1.99", 1 },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		int c = docker_version_cmp(rows[i].a, rows[i].b);

		assert_int_equal(c < 0 ? -1 : c > 0 ? 1 : 0, rows[i].sign);
	}
}

/* ================= a small HTTP server in a thread ================= */

static int tcp_port;
static char unix_path[108];
static pthread_mutex_t srv_lock = PTHREAD_MUTEX_INITIALIZER;
static char server_api_version[16] = "1.41"; /* what /_ping announces */
static char req_log[64][1100];                /* "METHOD PATH" per request */
static int n_req_log;
static int n_pings;

static void log_request(const char *method, const char *path)
{
	pthread_mutex_lock(&srv_lock);
	if (n_req_log < (int)ELEMENTSOF(req_log))
		snprintf(req_log[n_req_log++], sizeof(req_log[0]), "%s %s", method, path);
	if (streq(path, "/_ping"))
		n_pings++;
	pthread_mutex_unlock(&srv_lock);
}

static void reset_server(const char *version)
{
	pthread_mutex_lock(&srv_lock);
	snprintf(server_api_version, sizeof(server_api_version), "%s", version);
	n_req_log = 0;
	n_pings = 0;
	pthread_mutex_unlock(&srv_lock);
}

static bool logged(const char *line)
{
	bool found = false;

	pthread_mutex_lock(&srv_lock);
	for (int i = 0; i < n_req_log; i++)
		if (streq(req_log[i], line))
			found = true;
	pthread_mutex_unlock(&srv_lock);
	return found;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0)
			return;
		p += k;
		n -= (size_t)k;
	}
}

static void respond(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
	char head[1024];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
			 status, len, extra_headers ? extra_headers : "");
	send_all(fd, head, (size_t)n);
	if (len)
		send_all(fd, body, len);
}

static const char *header_value(const char *req, const char *name, char *out, size_t outlen)
{
	const char *p = strcasestr(req, name);

	out[0] = 0;
	if (!p)
		return out;
	p += strlen(name);
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, "\r\n");
	snprintf(out, outlen, "%.*s", (int)MIN(n, outlen - 1), p);
	return out;
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char req[65536], method[16], path[1024], ct[128], auth[256], cl[32];
	size_t have = 0;
	char *end = NULL, *body;
	long clen;

	while (have < sizeof(req) - 1) {
		ssize_t k = recv(fd, req + have, sizeof(req) - 1 - have, 0);
		if (k <= 0)
			goto out;
		have += (size_t)k;
		req[have] = 0;
		if ((end = strstr(req, "\r\n\r\n")))
			break;
	}
	if (!end || sscanf(req, "%15s %1023s", method, path) != 2)
		goto out;
	header_value(req, "\ncontent-length:", cl, sizeof(cl));
	clen = cl[0] ? atol(cl) : 0;
	body = end + 4;
	while ((long)(have - (size_t)(body - req)) < clen && have < sizeof(req) - 1) {
		ssize_t k = recv(fd, req + have, sizeof(req) - 1 - have, 0);
		if (k <= 0)
			break;
		have += (size_t)k;
		req[have] = 0;
	}
	log_request(method, path);

	if (streq(path, "/_ping")) {
		char h[64];

		pthread_mutex_lock(&srv_lock);
		snprintf(h, sizeof(h), "Api-Version: %s\r\n", server_api_version);
		pthread_mutex_unlock(&srv_lock);
		respond(fd, 200, h, "OK", 2);
	} else if (streq(path, "/ok")) {
		respond(fd, 200, "API-VERSION:  1.99 \r\n", "hello", 5);
	} else if (strncmp(path, "/delay/", 7) == 0) {
		usleep((useconds_t)atoi(path + 7) * 1000);
		respond(fd, 200, NULL, "done", 4);
	} else if (streq(path, "/stall")) {
		sleep(3);
	} else if (streq(path, "/status/500")) {
		respond(fd, 500, NULL, "oops", 4);
	} else if (streq(path, "/big") || streq(path, "/bigstream")) {
		static char chunk[65536];
		size_t total = 2 * 1024 * 1024;

		memset(chunk, 'x', sizeof(chunk));
		if (streq(path, "/big")) {
			char h[128];
			int n = snprintf(h, sizeof(h),
					 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", total);
			send_all(fd, h, (size_t)n);
		} else /* no length: only the write callback can stop it */
			send_all(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 38);
		for (size_t sent = 0; sent < total; sent += sizeof(chunk))
			send_all(fd, chunk, sizeof(chunk));
	} else if (streq(path, "/echo")) {
		char out[70000];
		int n;

		header_value(req, "\ncontent-type:", ct, sizeof(ct));
		header_value(req, "\nauthorization:", auth, sizeof(auth));
		n = snprintf(out, sizeof(out), "%s|%s|%s|%ld|%s", method, ct, auth, clen,
			     clen > 0 ? body : "");
		respond(fd, 200, NULL, out, (size_t)MIN(n, (int)sizeof(out) - 1));
	} else if (strstr(path, "/containers/json")) {
		respond(fd, 200, NULL, "[]", 2);
	} else if (strstr(path, "/containers/create?name=taken")) {
		const char *m = "{\"message\":\"Conflict. The container name \\\"/taken\\\" is "
				"already in use\"}";
		respond(fd, 409, NULL, m, strlen(m));
	} else if (strstr(path, "/containers/create")) {
		const char *m = "{\"Id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123"
				"456789abcdef\",\"Warnings\":[]}";
		respond(fd, 201, NULL, m, strlen(m));
	} else if (strstr(path, "/containers/missing/")) {
		const char *m = "{\"message\":\"No such container: missing\"}";
		respond(fd, 404, NULL, m, strlen(m));
	} else if (strstr(path, "/containers/dropme/")) {
		/* close without answering: a connection-level failure */
	} else if (strstr(path, "/start")) {
		respond(fd, strstr(path, "/already/") ? 304 : 204, NULL, "", 0);
	} else if (strstr(path, "/stop") || strstr(path, "/rename") ||
		   streq(method, "DELETE")) {
		respond(fd, 204, NULL, "", 0);
	} else {
		const char *m = "{\"message\":\"page not found\"}";
		respond(fd, 404, NULL, m, strlen(m));
	}
out:
	close(fd);
	return NULL;
}

static void *accept_loop(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		pthread_t t;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

static int server_setup(void **state)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t sl = sizeof(sin);
	char dir[] = "/tmp/sluice-test-docker.XXXXXX";
	pthread_t t;
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) < 0)
		return -1;
	tcp_port = ntohs(sin.sin_port);
	pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)fd);
	pthread_detach(t);

	if (!mkdtemp(dir))
		return -1;
	snprintf(unix_path, sizeof(unix_path), "%s/docker.sock", dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", unix_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 64) < 0)
		return -1;
	pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)fd);
	pthread_detach(t);
	return 0;
}

static int server_teardown(void **state)
{
	char dir[sizeof(unix_path)];

	unlink(unix_path);
	snprintf(dir, sizeof(dir), "%s", unix_path);
	*strrchr(dir, '/') = 0;
	rmdir(dir);
	return 0;
}

/* ================= Http through sd-event ================= */

typedef struct {
	int done;
	int error;
	long status;
	char body[256];
	size_t body_len;
	char api_version[32];
	char error_text[256];
	double elapsed;
	double at; /* monotonic time of completion */
} Result;

static void on_http(const HttpResponse *r, void *userdata)
{
	Result *res = userdata;

	res->done++;
	res->error = r->error;
	res->status = r->status;
	res->body_len = r->body_len;
	snprintf(res->body, sizeof(res->body), "%s", r->body);
	snprintf(res->api_version, sizeof(res->api_version), "%s",
		 r->api_version ? r->api_version : "");
	snprintf(res->error_text, sizeof(res->error_text), "%s",
		 r->error_text ? r->error_text : "");
	res->elapsed = r->elapsed;
	res->at = monotonic();
}

/* Run the loop until *counter >= want or TIMEOUT seconds pass. */
static void run_until(sd_event *e, const int *counter, int want, double timeout)
{
	double deadline = monotonic() + timeout;

	while (*counter < want && monotonic() < deadline)
		assert_true(sd_event_run(e, 50 * 1000) >= 0);
}

static char *url(const char *path)
{
	char *u;
	assert_true(asprintf(&u, "http://127.0.0.1:%d%s", tcp_port, path) > 0);
	return u;
}

typedef struct {
	sd_event *e;
	Http *h;
} Loop;

static void loop_open(Loop *l)
{
	assert_int_equal(sd_event_new(&l->e), 0);
	assert_int_equal(http_new(l->e, &l->h), 0);
}

static void loop_close(Loop *l)
{
	http_free(l->h);
	sd_event_unref(l->e);
}

static void get(Loop *l, const char *path, double timeout, size_t max_body, Result *res)
{
	_cleanup_free_ char *u = url(path);
	HttpRequest req = { .url = u, .timeout = timeout, .max_body = max_body };

	assert_int_equal(http_submit(l->h, &req, on_http, res), 0);
}

static void test_http_get_completes_through_loop_and_captures_api_version(void **state)
{
	Loop l;
	Result res = {};

	loop_open(&l);
	get(&l, "/ok", 5, 0, &res);
	assert_int_equal(res.done, 0); /* submit never blocks or completes inline */
	assert_int_equal(http_in_flight(l.h), 1);
	run_until(l.e, &res.done, 1, 5);
	assert_int_equal(res.done, 1);
	assert_int_equal(res.error, 0);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, "hello");
	assert_int_equal(res.body_len, 5);
	assert_string_equal(res.api_version, "1.99"); /* header name matched case-insensitively */
	assert_int_equal(http_in_flight(l.h), 0);
	assert_int_equal(http_requests_total(l.h), 1);
	loop_close(&l);
}

static void test_http_timeout_is_etimedout(void **state)
{
	Loop l;
	Result res = {};

	loop_open(&l);
	get(&l, "/stall", 0.3, 0, &res);
	run_until(l.e, &res.done, 1, 5);
	assert_int_equal(res.done, 1);
	assert_int_equal(res.error, -ETIMEDOUT);
	assert_true(res.error_text[0]);
	assert_true(res.elapsed >= 0.25 && res.elapsed < 1.5);
	loop_close(&l);
}

static void test_http_oversize_body_is_emsgsize(void **state)
{
	static const char *const paths[] = { "/big", "/bigstream" };

	for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
		Loop l;
		Result res = {};

		loop_open(&l);
		get(&l, paths[i], 5, 100 * 1000, &res);
		run_until(l.e, &res.done, 1, 5);
		assert_int_equal(res.done, 1);
		assert_int_equal(res.error, -EMSGSIZE);
		loop_close(&l);
	}
}

static void test_http_500_is_a_status_not_an_error(void **state)
{
	Loop l;
	Result res = {};

	loop_open(&l);
	get(&l, "/status/500", 5, 0, &res);
	run_until(l.e, &res.done, 1, 5);
	assert_int_equal(res.error, 0);
	assert_int_equal(res.status, 500);
	assert_string_equal(res.body, "oops");
	loop_close(&l);
}

static int tick_count;
static int on_tick(sd_event_source *s, uint64_t usec, void *userdata)
{
	tick_count++;
	sd_event_source_set_time(s, usec + 20 * 1000);
	return 0;
}

static void test_http_concurrent_requests_overlap_and_loop_stays_responsive(void **state)
{
	enum { N = 8 };
	Loop l;
	Result res[N] = {};
	int done = 0;
	double t0;
	sd_event_source *tick;
	uint64_t now;

	loop_open(&l);
	assert_true(sd_event_now(l.e, CLOCK_MONOTONIC, &now) >= 0); /* 1: loop not run yet */
	tick_count = 0;
	assert_int_equal(sd_event_add_time(l.e, &tick, CLOCK_MONOTONIC, now + 20 * 1000, 1000,
					   on_tick, NULL),
			 0);
	sd_event_source_set_enabled(tick, SD_EVENT_ON);

	t0 = monotonic();
	for (int i = 0; i < N; i++)
		get(&l, "/delay/400", 5, 0, &res[i]);
	assert_int_equal(http_in_flight(l.h), N);
	while (done < N && monotonic() - t0 < 10) {
		assert_true(sd_event_run(l.e, 50 * 1000) >= 0);
		done = 0;
		for (int i = 0; i < N; i++)
			done += res[i].done;
	}
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(res[i].status, 200);
		assert_true(res[i].at - t0 < 1.2); /* serial would be 3.2 s */
	}
	/* A 20 ms timer kept firing while the requests were in flight. */
	assert_true(tick_count >= 10);
	assert_int_equal(http_requests_total(l.h), N);
	sd_event_source_unref(tick);
	loop_close(&l);
}

static void test_http_connect_errors(void **state)
{
	Loop l;
	Result a = {}, b = {};
	HttpRequest ra = { .url = "http://127.0.0.1:1/", .timeout = 5 };
	HttpRequest rb = { .url = "http://docker/_ping", .unix_socket = "/nonexistent/sock",
			   .timeout = 5 };

	loop_open(&l);
	assert_int_equal(http_submit(l.h, &ra, on_http, &a), 0);
	assert_int_equal(http_submit(l.h, &rb, on_http, &b), 0);
	run_until(l.e, &b.done, 1, 5);
	run_until(l.e, &a.done, 1, 5);
	assert_int_equal(a.error, -ECONNREFUSED);
	assert_int_equal(b.error, -ENOENT);
	loop_close(&l);
}

static void test_http_methods_body_and_basic_auth(void **state)
{
	static const struct {
		const char *method, *body, *expect;
	} rows[] = {
		{ NULL, NULL, "GET|||0|" },
		{ "POST", "{\"a\":1}", "POST|application/json|Basic dTpzM2NyM3Q=|7|{\"a\":1}" },
		{ "POST", NULL, "POST|||0|" },
		{ "DELETE", NULL, "DELETE|||0|" },
	};
	Loop l;

	loop_open(&l);
	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		_cleanup_free_ char *u = url("/echo");
		HttpRequest req = { .url = u, .method = rows[i].method, .body = rows[i].body };
		Result res = {};

		if (rows[i].body) {
			req.user = "u";
			req.password = "s3cr3t";
		}
		assert_int_equal(http_submit(l.h, &req, on_http, &res), 0);
		run_until(l.e, &res.done, 1, 5);
		assert_int_equal(res.status, 200);
		if (rows[i].body)
			assert_string_equal(res.body, rows[i].expect);
		else {
			/* no body: no Content-Type, no auth; "Authorization" column empty */
			assert_string_equal(res.body, rows[i].expect);
		}
	}
	{
		_cleanup_free_ char *u = url("/echo");
		HttpRequest req = { .url = u, .method = "HEAD" };
		Result res = {};

		assert_int_equal(http_submit(l.h, &req, on_http, &res), 0);
		run_until(l.e, &res.done, 1, 5);
		assert_int_equal(res.status, 200);
		assert_int_equal(res.body_len, 0);
		assert_true(logged("HEAD /echo"));
	}
	loop_close(&l);
}

typedef struct {
	Loop *l;
	Result first, second;
} Chain;

static void on_chain_first(const HttpResponse *r, void *userdata)
{
	Chain *c = userdata;
	_cleanup_free_ char *u = url("/ok");
	HttpRequest req = { .url = u };

	on_http(r, &c->first);
	/* Submitting from a completion callback is allowed. */
	assert_int_equal(http_submit(c->l->h, &req, on_http, &c->second), 0);
}

static void test_http_callback_may_submit(void **state)
{
	Loop l;
	Chain c = { .l = &l };
	_cleanup_free_ char *u = NULL;
	HttpRequest req;

	loop_open(&l);
	u = url("/status/500");
	req = (HttpRequest){ .url = u };
	assert_int_equal(http_submit(l.h, &req, on_chain_first, &c), 0);
	run_until(l.e, &c.second.done, 1, 5);
	assert_int_equal(c.first.status, 500);
	assert_int_equal(c.second.status, 200);
	assert_int_equal(http_requests_total(l.h), 2);
	loop_close(&l);
}

static void test_http_free_aborts_without_callbacks(void **state)
{
	Loop l;
	Result res = {};
	double t0 = monotonic();

	loop_open(&l);
	get(&l, "/delay/300", 5, 0, &res);
	for (int i = 0; i < 3; i++)
		sd_event_run(l.e, 10 * 1000);
	loop_close(&l); /* must neither block until the answer nor call back */
	assert_int_equal(res.done, 0);
	assert_true(monotonic() - t0 < 0.25);
}

static void test_http_escape(void **state)
{
	static const struct {
		const char *in, *out;
	} rows[] = {
		{ "/", "%2F" },
		{ "a b", "a%20b" },
		{ "celery-1", "celery-1" },
		{ "{\"label\":[\"x=y\"]}", "%7B%22label%22%3A%5B%22x%3Dy%22%5D%7D" },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		_cleanup_free_ char *s = http_escape(rows[i].in);
		assert_string_equal(s, rows[i].out);
	}
}

/* ================= Docker verbs against the fake engine ================= */

typedef struct {
	int done;
	int r;
	char error[512];
	char id[80];
	size_t n;
} DResult;

static void on_docker(int r, const char *error, void *userdata)
{
	DResult *res = userdata;

	res->done++;
	res->r = r;
	snprintf(res->error, sizeof(res->error), "%s", error ? error : "");
}

static void on_docker_list(int r, const char *error, DockerContainer *list, size_t n,
			   void *userdata)
{
	DResult *res = userdata;

	on_docker(r, error, userdata);
	res->n = n;
}

static void on_docker_create(int r, const char *error, const char *id, void *userdata)
{
	DResult *res = userdata;

	on_docker(r, error, userdata);
	snprintf(res->id, sizeof(res->id), "%s", id ? id : "");
}

static void on_docker_inspect(int r, const char *error, const DockerContainer *c,
			      void *userdata)
{
	on_docker(r, error, userdata);
}

#define LIST_QUERY "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22io.sluice.managed%3Dtrue%22%5D%7D"

static void test_docker_negotiates_min_of_server_and_client_max(void **state)
{
	static const struct {
		const char *server, *chosen;
	} rows[] = {
		{ "1.41", "1.41" },
		{ "1.43", "1.43" },
		{ "1.47", "1.47" },
		{ "1.54", "1.47" }, /* DOCKER_API_MAX */
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		Loop l;
		Docker *d;
		DResult a = {}, b = {};
		char line[256];

		reset_server(rows[i].server);
		loop_open(&l);
		assert_int_equal(docker_new(l.h, unix_path, &d), 0);
		assert_null(docker_api_version(d));
		/* Two requests before the ping completes: both queued behind one ping. */
		assert_int_equal(docker_list(d, on_docker_list, &a), 0);
		assert_int_equal(docker_list(d, on_docker_list, &b), 0);
		run_until(l.e, &a.done, 1, 5);
		run_until(l.e, &b.done, 1, 5);
		assert_int_equal(a.r, 0);
		assert_int_equal(b.r, 0);
		assert_string_equal(docker_api_version(d), rows[i].chosen);
		assert_int_equal(n_pings, 1);
		snprintf(line, sizeof(line), "GET /v%s%s", rows[i].chosen, LIST_QUERY);
		assert_true(logged(line));
		docker_free(d);
		loop_close(&l);
	}
}

static void test_docker_refuses_server_below_min(void **state)
{
	Loop l;
	Docker *d;
	DResult a = {}, p = {};

	reset_server("1.40");
	loop_open(&l);
	assert_int_equal(docker_new(l.h, unix_path, &d), 0);
	assert_int_equal(docker_ping(d, on_docker, &p), 0);
	assert_int_equal(docker_list(d, on_docker_list, &a), 0);
	run_until(l.e, &a.done, 1, 5);
	assert_int_equal(p.r, -EPROTONOSUPPORT);
	assert_int_equal(a.r, -EPROTONOSUPPORT);
	assert_non_null(strstr(a.error, "1.40"));
	assert_non_null(strstr(a.error, DOCKER_API_MIN));
	assert_null(docker_api_version(d));
	assert_int_equal(n_pings, 1);
	assert_false(logged("GET /v1.40" LIST_QUERY)); /* nothing but the ping was sent */
	assert_false(logged("GET /v1.41" LIST_QUERY));
	docker_free(d);
	loop_close(&l);
}

static void test_docker_stop_signal_only_from_1_42_and_ceil_t(void **state)
{
	static const struct {
		const char *server, *expect;
	} rows[] = {
		{ "1.41", "POST /v1.41/containers/abc/stop?t=3" },
		{ "1.42", "POST /v1.42/containers/abc/stop?t=3&signal=SIGQUIT" },
	};

	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		Loop l;
		Docker *d;
		DResult a = {};

		reset_server(rows[i].server);
		loop_open(&l);
		assert_int_equal(docker_new(l.h, unix_path, &d), 0);
		assert_int_equal(docker_stop(d, "abc", "SIGQUIT", 2.2, on_docker, &a), 0);
		run_until(l.e, &a.done, 1, 5);
		assert_int_equal(a.r, 0);
		assert_true(logged(rows[i].expect));
		docker_free(d);
		loop_close(&l);
	}
}

static void test_docker_verbs_urls_and_status_mapping(void **state)
{
	PoolConfig p = full_pool();
	Loop l;
	Docker *d;
	DResult c1 = {}, c2 = {}, s1 = {}, s2 = {}, rn = {}, rm = {}, in = {}, st = {};

	reset_server("1.41");
	loop_open(&l);
	assert_int_equal(docker_new(l.h, unix_path, &d), 0);
	assert_int_equal(docker_create(d, &p, "celery-1", 1, on_docker_create, &c1), 0);
	assert_int_equal(docker_create(d, &p, "taken", 2, on_docker_create, &c2), 0);
	assert_int_equal(docker_start(d, "abc", on_docker, &s1), 0);
	assert_int_equal(docker_start(d, "already", on_docker, &s2), 0);
	assert_int_equal(docker_rename(d, "abc", "celery-1-old", on_docker, &rn), 0);
	assert_int_equal(docker_remove(d, "abc", on_docker, &rm), 0);
	assert_int_equal(docker_inspect(d, "missing", on_docker_inspect, &in), 0);
	assert_int_equal(docker_start(d, "missing", on_docker, &st), 0);
	{
		DResult *all[] = { &c1, &c2, &s1, &s2, &rn, &rm, &in, &st };

		for (size_t i = 0; i < ELEMENTSOF(all); i++) {
			run_until(l.e, &all[i]->done, 1, 5);
			assert_int_equal(all[i]->done, 1);
		}
	}

	assert_int_equal(c1.r, 0);
	assert_string_equal(c1.id,
			    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	assert_int_equal(c2.r, -EEXIST);
	assert_non_null(strstr(c2.error, "already in use"));
	assert_int_equal(s1.r, 0);
	assert_int_equal(s2.r, 0); /* 304: already started */
	assert_int_equal(rn.r, 0);
	assert_int_equal(rm.r, 0);
	assert_int_equal(in.r, -ENOENT);
	assert_non_null(strstr(in.error, "No such container"));
	assert_int_equal(st.r, -ENOENT);

	assert_true(logged("POST /v1.41/containers/create?name=celery-1"));
	assert_true(logged("POST /v1.41/containers/abc/start"));
	assert_true(logged("POST /v1.41/containers/abc/rename?name=celery-1-old"));
	assert_true(logged("DELETE /v1.41/containers/abc?v=1"));
	assert_true(logged("GET /v1.41/containers/missing/json"));
	assert_int_equal(n_pings, 1);
	docker_free(d);
	loop_close(&l);
}

static void test_docker_renegotiates_after_connection_failure(void **state)
{
	Loop l;
	Docker *d;
	DResult a = {}, b = {};

	reset_server("1.41");
	loop_open(&l);
	assert_int_equal(docker_new(l.h, unix_path, &d), 0);
	assert_int_equal(docker_inspect(d, "dropme", on_docker_inspect, &a), 0);
	run_until(l.e, &a.done, 1, 5);
	assert_int_equal(a.r, -EIO); /* connection closed without an answer */
	assert_null(docker_api_version(d));

	reset_server("1.43"); /* "upgraded" while we were away */
	assert_int_equal(docker_list(d, on_docker_list, &b), 0);
	run_until(l.e, &b.done, 1, 5);
	assert_int_equal(b.r, 0);
	assert_int_equal(n_pings, 1);
	assert_string_equal(docker_api_version(d), "1.43");
	docker_free(d);
	loop_close(&l);
}

static void test_docker_free_with_requests_in_flight_calls_nothing(void **state)
{
	Loop l;
	Docker *d;
	DResult a = {}, b = {};

	reset_server("1.41");
	loop_open(&l);
	assert_int_equal(docker_new(l.h, unix_path, &d), 0);
	assert_int_equal(docker_list(d, on_docker_list, &a), 0);
	run_until(l.e, &a.done, 1, 5);
	assert_int_equal(docker_stop(d, "abc", NULL, 1, on_docker, &b), 0); /* in Http now */
	docker_free(d);
	for (int i = 0; i < 20 && http_in_flight(l.h) > 0; i++)
		sd_event_run(l.e, 50 * 1000);
	assert_int_equal(http_in_flight(l.h), 0);
	assert_int_equal(b.done, 0);
	loop_close(&l);
}

int main(void)
{
	/* One group: cmocka's TAP output has one plan per group, the harness wants one. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_list_managed_fixture),
		cmocka_unit_test(test_parse_list_all_fixture_marks_unmanaged),
		cmocka_unit_test(test_parse_list_empty),
		cmocka_unit_test(test_parse_inspect_fixtures),
		cmocka_unit_test(test_parse_inspect_time_offsets),
		cmocka_unit_test(test_parse_garbage_is_einval),
		cmocka_unit_test(test_parse_truncated_fixtures_are_einval),
		cmocka_unit_test(test_substitute_table),
		cmocka_unit_test(test_create_body_full),
		cmocka_unit_test(test_create_body_minimal_omits_optionals),
		cmocka_unit_test(test_version_cmp_numeric),
		cmocka_unit_test(test_http_escape),
		/* against the server threads started by server_setup() */
		cmocka_unit_test(test_http_get_completes_through_loop_and_captures_api_version),
		cmocka_unit_test(test_http_timeout_is_etimedout),
		cmocka_unit_test(test_http_oversize_body_is_emsgsize),
		cmocka_unit_test(test_http_500_is_a_status_not_an_error),
		cmocka_unit_test(test_http_concurrent_requests_overlap_and_loop_stays_responsive),
		cmocka_unit_test(test_http_connect_errors),
		cmocka_unit_test(test_http_methods_body_and_basic_auth),
		cmocka_unit_test(test_http_callback_may_submit),
		cmocka_unit_test(test_http_free_aborts_without_callbacks),
		cmocka_unit_test(test_docker_negotiates_min_of_server_and_client_max),
		cmocka_unit_test(test_docker_refuses_server_below_min),
		cmocka_unit_test(test_docker_stop_signal_only_from_1_42_and_ceil_t),
		cmocka_unit_test(test_docker_verbs_urls_and_status_mapping),
		cmocka_unit_test(test_docker_renegotiates_after_connection_failure),
		cmocka_unit_test(test_docker_free_with_requests_in_flight_calls_nothing),
	};
	return cmocka_run_group_tests_name("docker", tests, server_setup, server_teardown);
}
