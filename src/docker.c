/* SPDX-License-Identifier: MIT */
/* Docker Engine API client on Http (see docker.h).
 *
 * Every request is a DockerOp. Ops wait in d->queue until the API version is known; the first
 * op (or a connection-level failure, which forgets the version) starts one GET /_ping, whose
 * answer releases the queue. All paths are built at dispatch time, so an op queued before the
 * ping still gets the right "/v<ver>" prefix and the version-gated "signal=" parameter.
 *
 * docker_free() may run while ops are inside Http: it cancels them with http_cancel(), so their
 * callbacks are never called. Callbacks may call any docker_*() verb, and docker_free(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "docker.h"
#include "macro.h"

#define DOCKER_HOST_URL "http://docker"
#define DOCKER_TIMEOUT 60.0       /* create, start, rename, remove, list, inspect */
#define DOCKER_PING_TIMEOUT 10.0
#define DOCKER_STOP_EXTRA 30.0    /* stop: HTTP timeout = t + this (moby#45731) */
#define DOCKER_LIST_MAX (8u * 1024u * 1024u)
#define DOCKER_INSPECT_MAX (1u * 1024u * 1024u)
#define DOCKER_SMALL_MAX (256u * 1024u)

typedef enum {
	OP_PING_WAIT, /* an explicit docker_ping() waiting for the shared ping */
	OP_PING,      /* the one internal GET /_ping */
	OP_LIST,
	OP_CREATE,
	OP_START,
	OP_STOP,
	OP_RENAME,
	OP_REMOVE,
	OP_INSPECT,
} OpKind;

typedef struct DockerOp DockerOp;

struct DockerOp {
	Docker *docker;
	OpKind kind;
	const char *method;
	char *path;     /* after the version prefix, e.g. "/containers/json?all=1&..." */
	char *signal;   /* OP_STOP: appended as &signal= from API 1.42 */
	char *body;
	char *what;     /* for error messages: "create celery-1", "stop 0123abcd" */
	double timeout;
	size_t max_body;
	bool in_http;
	union {
		DockerCallback cb;
		DockerListCallback list_cb;
		DockerCreateCallback create_cb;
		DockerInspectCallback inspect_cb;
	};
	void *userdata;
	DockerOp *prev, *next; /* in docker->queue while waiting, else in docker->active */
};

struct Docker {
	Http *http;
	char *socket;
	char *version;
	bool pinging;
	DockerOp *queue;  /* waiting for the version (FIFO: appended at the tail) */
	DockerOp *active; /* inside Http */
	bool releasing;   /* inside on_ping_done()'s loop over the queue */
	bool free_later;  /* docker_free() was called from a callback during that loop */
};

/* ---- small helpers ---- */

static void op_list_remove(DockerOp **head, DockerOp *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else if (*head == op)
		*head = op->next;
	if (op->next)
		op->next->prev = op->prev;
	op->prev = op->next = NULL;
}

static void op_list_append(DockerOp **head, DockerOp *op)
{
	DockerOp *t;

	op->next = NULL;
	if (!*head) {
		op->prev = NULL;
		*head = op;
		return;
	}
	for (t = *head; t->next; t = t->next)
		;
	t->next = op;
	op->prev = t;
}

static void op_free(DockerOp *op)
{
	if (!op)
		return;
	free(op->path);
	free(op->signal);
	free(op->body);
	free(op->what);
	free(op);
}

static char *short_id(const char *id)
{
	/* 12 characters like the docker CLI; names are kept whole. */
	size_t n = strlen(id);

	if (n == 64 && strspn(id, "0123456789abcdef") == 64)
		return strndup(id, 12);
	return strdup(id);
}

/* Deliver a failure (or a bare success) to the op's callback. */
static void op_fail(DockerOp *op, int r, const char *error)
{
	switch (op->kind) {
	case OP_PING:
		break;
	case OP_LIST:
		if (op->list_cb)
			op->list_cb(r, error, NULL, 0, op->userdata);
		break;
	case OP_CREATE:
		if (op->create_cb)
			op->create_cb(r, error, NULL, op->userdata);
		break;
	case OP_INSPECT:
		if (op->inspect_cb)
			op->inspect_cb(r, error, NULL, op->userdata);
		break;
	default:
		if (op->cb)
			op->cb(r, error, op->userdata);
		break;
	}
}

/* ---- dispatch ---- */

static void on_ping_done(const HttpResponse *resp, void *userdata);
static void on_op_done(const HttpResponse *resp, void *userdata);
static int start_ping(Docker *d);

static int op_submit(Docker *d, DockerOp *op)
{
	_cleanup_free_ char *url = NULL;
	HttpRequest req = {
		.method = op->method,
		.unix_socket = d->socket,
		.body = op->body,
		.timeout = op->timeout,
		.max_body = op->max_body,
	};
	int r;

	if (op->kind == OP_PING)
		r = asprintf(&url, DOCKER_HOST_URL "%s", op->path);
	else if (op->kind == OP_STOP && op->signal && docker_version_cmp(d->version, "1.42") >= 0)
		r = asprintf(&url, DOCKER_HOST_URL "/v%s%s&signal=%s", d->version, op->path,
			     op->signal);
	else
		r = asprintf(&url, DOCKER_HOST_URL "/v%s%s", d->version, op->path);
	if (r < 0) {
		url = NULL;
		return -ENOMEM;
	}
	req.url = url;

	r = http_submit(d->http, &req, op->kind == OP_PING ? on_ping_done : on_op_done, op);
	if (r < 0)
		return r;
	op->in_http = true;
	op_list_append(&d->active, op);
	return 0;
}

/* Park OP until the API version is negotiated, starting the ping if none is under way. The
 * ping's completion submits (or fails) everything parked. */
static int op_queue_for_ping(Docker *d, DockerOp *op)
{
	op_list_append(&d->queue, op);
	if (!d->pinging) {
		int r = start_ping(d);
		if (r < 0) {
			op_list_remove(&d->queue, op);
			op_free(op);
			return r;
		}
	}
	return 0;
}

/* Take ownership of OP: send it now if the version is known, else queue it behind a ping.
 * On failure OP is freed and its callback is not called. */
static int op_dispatch(Docker *d, DockerOp *op)
{
	int r;

	if (d->version) {
		r = op_submit(d, op);
		if (r < 0)
			op_free(op);
		return r;
	}

	return op_queue_for_ping(d, op);
}

static DockerOp *op_new(Docker *d, OpKind kind, const char *method, double timeout,
			size_t max_body, void *userdata)
{
	DockerOp *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->docker = d;
	op->kind = kind;
	op->method = method;
	op->timeout = timeout;
	op->max_body = max_body;
	op->userdata = userdata;
	return op;
}

static int start_ping(Docker *d)
{
	DockerOp *op = op_new(d, OP_PING, "GET", DOCKER_PING_TIMEOUT, DOCKER_SMALL_MAX, NULL);
	int r;

	if (!op)
		return -ENOMEM;
	op->path = strdup("/_ping");
	op->what = strdup("ping");
	if (!op->path || !op->what) {
		op_free(op);
		return -ENOMEM;
	}
	r = op_submit(d, op);
	if (r < 0) {
		op_free(op);
		return r;
	}
	d->pinging = true;
	return 0;
}

/* The version choice, separate for testing: min(server, MAX), refusing below MIN. */
static int negotiate(const char *server, char **ret, char **ret_error)
{
	const char *v;

	if (!server || !*server) {
		if (asprintf(ret_error, "Docker did not send an Api-Version header (Engine API "
					"older than 1.25?), sluice needs at least %s",
			     DOCKER_API_MIN) < 0)
			*ret_error = NULL;
		return -EPROTONOSUPPORT;
	}
	if (docker_version_cmp(server, DOCKER_API_MIN) < 0) {
		if (asprintf(ret_error,
			     "Docker Engine API %s is too old, sluice needs at least %s "
			     "(Docker 20.10 or later)",
			     server, DOCKER_API_MIN) < 0)
			*ret_error = NULL;
		return -EPROTONOSUPPORT;
	}
	v = docker_version_cmp(server, DOCKER_API_MAX) < 0 ? server : DOCKER_API_MAX;
	*ret = strdup(v);
	return *ret ? 0 : -ENOMEM;
}

static void on_ping_done(const HttpResponse *resp, void *userdata)
{
	DockerOp *op = userdata, *q;
	Docker *d = op->docker;
	_cleanup_free_ char *error = NULL, *version = NULL;
	int r = 0;

	op_list_remove(&d->active, op);
	op_free(op);
	d->pinging = false;

	if (resp->error < 0) {
		r = resp->error;
		if (asprintf(&error, "docker ping on %s: %s", d->socket,
			     resp->error_text ? resp->error_text : strerror(-r)) < 0)
			error = NULL;
	} else if (resp->status != 200) {
		r = -EIO;
		if (asprintf(&error, "docker ping on %s: HTTP %ld", d->socket, resp->status) < 0)
			error = NULL;
	} else
		r = negotiate(resp->api_version, &version, &error);

	if (r >= 0) {
		free(d->version);
		d->version = TAKE_PTR(version);
	}

	/* Release the queue. Take it whole first: callbacks may queue new ops (which will then
	 * start a new ping if this one failed). */
	q = d->queue;
	d->queue = NULL;
	d->releasing = true;
	while (q) {
		DockerOp *next = q->next;
		int k;

		q->prev = q->next = NULL;
		if (d->free_later) {
			op_free(q); /* docker_free() from a callback: no more callbacks */
		} else if (q->kind == OP_PING_WAIT) {
			op_fail(q, r < 0 ? r : 0, r < 0 ? error : NULL);
			op_free(q);
		} else if (r < 0) {
			op_fail(q, r, error);
			op_free(q);
		} else if (!d->version) {
			/* An earlier callback in this loop saw a failure and forgot the version:
			 * queue again behind the next ping. */
			op_list_append(&d->queue, q);
			k = d->pinging ? 0 : start_ping(d);
			if (k < 0) {
				op_list_remove(&d->queue, q);
				op_fail(q, k, "docker: could not submit ping");
				op_free(q);
			}
		} else {
			k = op_submit(d, q);
			if (k < 0) {
				op_fail(q, k, "docker: could not submit request");
				op_free(q);
			}
		}
		q = next;
	}
	d->releasing = false;
	if (d->free_later)
		docker_free(d);
}

/* Errors that suggest dockerd went away or was replaced: negotiate again next time. */
static bool is_connection_error(int error)
{
	return error == -ECONNREFUSED || error == -ENOENT || error == -EIO;
}

static char *docker_message(const HttpResponse *resp)
{
	json_error_t jerr;
	json_t *j = json_loadb(resp->body, resp->body_len, 0, &jerr);
	const char *m = NULL;
	char *ret;

	if (j && json_is_object(j))
		m = json_string_value(json_object_get(j, "message"));
	if (m)
		ret = strdup(m);
	else
		ret = strndup(resp->body, MIN(resp->body_len, (size_t)200));
	json_decref(j);
	if (ret) /* one line for the log */
		for (char *p = ret; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' ';
	return ret;
}

static void on_op_done(const HttpResponse *resp, void *userdata)
{
	DockerOp *op = userdata;
	Docker *d = op->docker;
	_cleanup_free_ char *error = NULL, *message = NULL;
	int r = 0;

	op_list_remove(&d->active, op);
	op->in_http = false;

	if (resp->error < 0) {
		r = resp->error;
		if (is_connection_error(r) && d->version) {
			free(d->version);
			d->version = NULL;
		}
		if (asprintf(&error, "docker %s: %s", op->what,
			     resp->error_text ? resp->error_text : strerror(-r)) < 0)
			error = NULL;
		goto fail;
	}

	switch (resp->status) {
	case 200:
	case 201:
	case 204:
		break;
	case 304:
		if (op->kind == OP_START || op->kind == OP_STOP)
			break;
		/* fall through */
	default:
		r = resp->status == 404 ? -ENOENT : resp->status == 409 ? -EEXIST : -EIO;
		message = docker_message(resp);
		if (asprintf(&error, "docker %s: HTTP %ld: %s", op->what, resp->status,
			     message ? message : "") < 0)
			error = NULL;
		/* "client version 1.47 is too new": dockerd was downgraded under us. */
		if (resp->status == 400 && message && strstr(message, "client version")) {
			free(d->version);
			d->version = NULL;
		}
		goto fail;
	}

	switch (op->kind) {
	case OP_LIST: {
		DockerContainer *list = NULL;
		size_t n = 0;

		r = docker_parse_list(resp->body, resp->body_len, &list, &n);
		if (r < 0) {
			r = -EBADMSG;
			if (asprintf(&error, "docker %s: unparsable answer", op->what) < 0)
				error = NULL;
			goto fail;
		}
		if (op->list_cb)
			op->list_cb(0, NULL, list, n, op->userdata);
		docker_containers_free(list, n);
		break;
	}
	case OP_CREATE: {
		json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
		const char *id = j ? json_string_value(json_object_get(j, "Id")) : NULL;

		if (!id || !*id) {
			json_decref(j);
			r = -EBADMSG;
			if (asprintf(&error, "docker %s: answer without an Id", op->what) < 0)
				error = NULL;
			goto fail;
		}
		if (op->create_cb)
			op->create_cb(0, NULL, id, op->userdata);
		json_decref(j);
		break;
	}
	case OP_INSPECT: {
		DockerContainer c = {};

		r = docker_parse_inspect(resp->body, resp->body_len, &c);
		if (r < 0) {
			r = -EBADMSG;
			if (asprintf(&error, "docker %s: unparsable answer", op->what) < 0)
				error = NULL;
			goto fail;
		}
		if (op->inspect_cb)
			op->inspect_cb(0, NULL, &c, op->userdata);
		docker_container_clear(&c);
		break;
	}
	default:
		if (op->cb)
			op->cb(0, NULL, op->userdata);
		break;
	}
	op_free(op);
	return;

fail:
	op_fail(op, r, error ? error : "docker: request failed");
	op_free(op);
}

/* ---- public: lifecycle ---- */

int docker_new(Http *h, const char *socket_path, Docker **ret)
{
	Docker *d;

	if (!h || !socket_path || !ret)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->http = h;
	d->socket = strdup(socket_path);
	if (!d->socket) {
		free(d);
		return -ENOMEM;
	}
	*ret = d;
	return 0;
}

Docker *docker_free(Docker *d)
{
	if (!d)
		return NULL;
	if (d->releasing) { /* called from a callback in on_ping_done(): finish there */
		d->free_later = true;
		return NULL;
	}
	while (d->queue) {
		DockerOp *op = d->queue;

		op_list_remove(&d->queue, op);
		op_free(op);
	}
	while (d->active) {
		DockerOp *op = d->active;

		op_list_remove(&d->active, op);
		(void)http_cancel(d->http, op);
		op_free(op);
	}
	free(d->socket);
	free(d->version);
	free(d);
	return NULL;
}

const char *docker_api_version(const Docker *d)
{
	return d ? d->version : NULL;
}

/* ---- public: verbs ---- */

int docker_ping(Docker *d, DockerCallback cb, void *userdata)
{
	DockerOp *op;

	if (!d)
		return -EINVAL;
	op = op_new(d, OP_PING_WAIT, "GET", 0, 0, userdata);
	if (!op)
		return -ENOMEM;
	op->cb = cb;
	return op_queue_for_ping(d, op);
}

static int make_op(Docker *d, OpKind kind, const char *method, double timeout, size_t max_body,
		   void *userdata, DockerOp **ret, const char *what, const char *path_fmt, ...)
    __attribute__((format(printf, 9, 10)));

/* Build an op whose path is PATH_FMT with its arguments (already escaped by the caller). */
static int make_op(Docker *d, OpKind kind, const char *method, double timeout, size_t max_body,
		   void *userdata, DockerOp **ret, const char *what, const char *path_fmt, ...)
{
	DockerOp *op;
	va_list ap;
	int r;

	op = op_new(d, kind, method, timeout, max_body, userdata);
	if (!op)
		return -ENOMEM;
	va_start(ap, path_fmt);
	r = vasprintf(&op->path, path_fmt, ap);
	va_end(ap);
	if (r < 0) {
		op->path = NULL;
		op_free(op);
		return -ENOMEM;
	}
	op->what = strdup(what);
	if (!op->what) {
		op_free(op);
		return -ENOMEM;
	}
	*ret = op;
	return 0;
}

int docker_list(Docker *d, DockerListCallback cb, void *userdata)
{
	_cleanup_free_ char *filters = NULL;
	DockerOp *op;
	int r;

	if (!d)
		return -EINVAL;
	filters = http_escape("{\"label\":[\"" LABEL_MANAGED "=true\"]}");
	if (!filters)
		return -ENOMEM;
	r = make_op(d, OP_LIST, "GET", DOCKER_TIMEOUT, DOCKER_LIST_MAX, userdata, &op, "list",
		    "/containers/json?all=1&filters=%s", filters);
	if (r < 0)
		return r;
	op->list_cb = cb;
	return op_dispatch(d, op);
}

int docker_create(Docker *d, const PoolConfig *p, const char *name, unsigned index,
		  DockerCreateCallback cb, void *userdata)
{
	_cleanup_free_ char *ename = NULL, *what = NULL;
	DockerOp *op;
	char *body;
	int r;

	if (!d || !p || !name || !*name)
		return -EINVAL;
	ename = http_escape(name);
	if (!ename)
		return -ENOMEM;
	body = docker_create_body(p, name, index);
	if (!body)
		return -ENOMEM;
	if (asprintf(&what, "create %s", name) < 0) {
		what = NULL;
		free(body);
		return -ENOMEM;
	}
	r = make_op(d, OP_CREATE, "POST", DOCKER_TIMEOUT, DOCKER_SMALL_MAX, userdata, &op, what,
		    "/containers/create?name=%s", ename);
	if (r < 0) {
		free(body);
		return r;
	}
	op->body = body;
	op->create_cb = cb;
	return op_dispatch(d, op);
}

/* An op on one container ID (a name works too). */
static int simple_op(Docker *d, OpKind kind, const char *method, const char *verb,
		     const char *id, DockerCallback cb, void *userdata, DockerOp **ret)
{
	_cleanup_free_ char *eid = NULL, *sid = NULL;
	DockerOp *op;
	int k;

	if (!d || !id || !*id)
		return -EINVAL;
	eid = http_escape(id);
	sid = short_id(id);
	if (!eid || !sid)
		return -ENOMEM;
	op = op_new(d, kind, method, DOCKER_TIMEOUT, DOCKER_SMALL_MAX, userdata);
	if (!op)
		return -ENOMEM;
	op->cb = cb;
	if (asprintf(&op->what, "%s %s", verb, sid) < 0) {
		op->what = NULL;
		op_free(op);
		return -ENOMEM;
	}
	/* The verb decides the path shape; stop and rename get their query appended later. */
	switch (kind) {
	case OP_REMOVE:
		k = asprintf(&op->path, "/containers/%s?v=1", eid);
		break;
	case OP_INSPECT:
		k = asprintf(&op->path, "/containers/%s/json", eid);
		break;
	default:
		k = asprintf(&op->path, "/containers/%s/%s", eid, verb);
		break;
	}
	if (k < 0)
		op->path = NULL;
	if (!op->path) {
		op_free(op);
		return -ENOMEM;
	}
	*ret = op;
	return 0;
}

/* Append "?KEY=VALUE" (VALUE already escaped) to the op's path. */
static int append_query(DockerOp *op, const char *key, const char *value)
{
	char *p;

	if (asprintf(&p, "%s?%s=%s", op->path, key, value) < 0)
		return -ENOMEM;
	free(op->path);
	op->path = p;
	return 0;
}

int docker_start(Docker *d, const char *id, DockerCallback cb, void *userdata)
{
	DockerOp *op;
	int r = simple_op(d, OP_START, "POST", "start", id, cb, userdata, &op);

	if (r < 0)
		return r;
	return op_dispatch(d, op);
}

int docker_stop(Docker *d, const char *id, const char *signal, double timeout, DockerCallback cb,
		void *userdata)
{
	char t[32];
	DockerOp *op;
	long secs;
	int r;

	if (!(timeout >= 0)) /* also NaN */
		timeout = 0;
	secs = timeout > 1e7 ? 10000000L : (long)ceil(timeout);
	r = simple_op(d, OP_STOP, "POST", "stop", id, cb, userdata, &op);
	if (r < 0)
		return r;
	snprintf(t, sizeof(t), "%ld", secs);
	if (append_query(op, "t", t) < 0) {
		op_free(op);
		return -ENOMEM;
	}
	if (signal && *signal) {
		op->signal = http_escape(signal);
		if (!op->signal) {
			op_free(op);
			return -ENOMEM;
		}
	}
	op->timeout = (double)secs + DOCKER_STOP_EXTRA;
	return op_dispatch(d, op);
}

int docker_rename(Docker *d, const char *id, const char *new_name, DockerCallback cb,
		  void *userdata)
{
	_cleanup_free_ char *ename = NULL;
	DockerOp *op;
	int r;

	if (!new_name || !*new_name)
		return -EINVAL;
	ename = http_escape(new_name);
	if (!ename)
		return -ENOMEM;
	r = simple_op(d, OP_RENAME, "POST", "rename", id, cb, userdata, &op);
	if (r < 0)
		return r;
	if (append_query(op, "name", ename) < 0) {
		op_free(op);
		return -ENOMEM;
	}
	return op_dispatch(d, op);
}

int docker_remove(Docker *d, const char *id, DockerCallback cb, void *userdata)
{
	DockerOp *op;
	int r = simple_op(d, OP_REMOVE, "DELETE", "remove", id, cb, userdata, &op);

	if (r < 0)
		return r;
	return op_dispatch(d, op);
}

int docker_inspect(Docker *d, const char *id, DockerInspectCallback cb, void *userdata)
{
	DockerOp *op;
	int r = simple_op(d, OP_INSPECT, "GET", "inspect", id, NULL, userdata, &op);

	if (r < 0)
		return r;
	op->max_body = DOCKER_INSPECT_MAX;
	op->inspect_cb = cb;
	return op_dispatch(d, op);
}

/* ---- pure helpers ---- */

void docker_container_clear(DockerContainer *c)
{
	if (!c)
		return;
	free(c->id);
	free(c->name);
	free(c->pool);
	free(c->spec);
	free(c->state);
	*c = (DockerContainer){ .exit_code = -1 };
}

void docker_containers_free(DockerContainer *c, size_t n)
{
	if (!c)
		return;
	for (size_t i = 0; i < n; i++)
		docker_container_clear(&c[i]);
	free(c);
}

int docker_version_cmp(const char *a, const char *b)
{
	if (!a || !b)
		return a ? 1 : b ? -1 : 0;

	for (;;) {
		unsigned long x = 0, y = 0;
		char *ea, *eb;

		if (*a)
			x = strtoul(a, &ea, 10);
		else
			ea = (char *)a;
		if (*b)
			y = strtoul(b, &eb, 10);
		else
			eb = (char *)b;
		if (x != y)
			return x < y ? -1 : 1;
		a = ea;
		b = eb;
		if (*a == '.')
			a++;
		if (*b == '.')
			b++;
		if (!*a && !*b)
			return 0;
		if ((*a && !(*a >= '0' && *a <= '9')) || (*b && !(*b >= '0' && *b <= '9')))
			return strcmp(a, b) < 0 ? -1 : strcmp(a, b) > 0 ? 1 : 0;
	}
}

char *docker_substitute(const char *s, const char *name, const char *pool, unsigned index)
{
	char idx[16];
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	if (!s)
		return NULL;
	snprintf(idx, sizeof(idx), "%u", index);
	f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	while (*s) {
		if (*s == '{') {
			if (strncmp(s, "{name}", 6) == 0) {
				fputs(name ? name : "", f);
				s += 6;
				continue;
			}
			if (strncmp(s, "{pool}", 6) == 0) {
				fputs(pool ? pool : "", f);
				s += 6;
				continue;
			}
			if (strncmp(s, "{index}", 7) == 0) {
				fputs(idx, f);
				s += 7;
				continue;
			}
		}
		fputc(*s, f);
		s++;
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int json_set_new(json_t *o, const char *k, json_t *v)
{
	if (!v)
		return -ENOMEM;
	return json_object_set_new(o, k, v) < 0 ? -ENOMEM : 0;
}

static json_t *substituted_array(char **v, size_t n, const char *name, const char *pool,
				 unsigned index)
{
	json_t *a = json_array();

	if (!a)
		return NULL;
	for (size_t i = 0; i < n && v[i]; i++) {
		_cleanup_free_ char *s = docker_substitute(v[i], name, pool, index);

		if (!s || json_array_append_new(a, json_string(s)) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

char *docker_create_body(const PoolConfig *p, const char *name, unsigned index)
{
	json_auto_t *o = NULL;
	json_t *labels, *host, *restart;
	const ContainerSpec *cs;

	if (!p || !name || !p->container.image)
		return NULL;
	cs = &p->container;

	o = json_object();
	if (!o || json_set_new(o, "Image", json_string(cs->image)) < 0)
		return NULL;
	if (cs->command && cs->n_command > 0 &&
	    json_set_new(o, "Cmd", substituted_array(cs->command, cs->n_command, name, p->name,
						      index)) < 0)
		return NULL;
	if (cs->env && cs->n_env > 0 &&
	    json_set_new(o, "Env", substituted_array(cs->env, cs->n_env, name, p->name, index)) < 0)
		return NULL;

	labels = json_object();
	if (json_set_new(o, "Labels", labels) < 0)
		return NULL;
	for (size_t i = 0; i < cs->n_labels; i++) {
		if (!cs->label_keys[i] || strncmp(cs->label_keys[i], "io.sluice.", 10) == 0)
			continue; /* ours below always win */
		if (json_set_new(labels, cs->label_keys[i],
				 json_string(cs->label_values[i] ? cs->label_values[i] : "")) < 0)
			return NULL;
	}
	if (json_set_new(labels, LABEL_POOL, json_string(p->name ? p->name : "")) < 0 ||
	    json_set_new(labels, LABEL_MANAGED, json_string("true")) < 0 ||
	    json_set_new(labels, LABEL_SPEC, json_string(p->spec_hash)) < 0)
		return NULL;

	if (p->stop_signal && *p->stop_signal &&
	    json_set_new(o, "StopSignal", json_string(p->stop_signal)) < 0)
		return NULL;
	if (p->stop_timeout >= 0 &&
	    json_set_new(o, "StopTimeout", json_integer((json_int_t)ceil(p->stop_timeout))) < 0)
		return NULL;
	if (cs->user && *cs->user && json_set_new(o, "User", json_string(cs->user)) < 0)
		return NULL;

	host = json_object();
	if (json_set_new(o, "HostConfig", host) < 0)
		return NULL;
	if (cs->network && *cs->network &&
	    json_set_new(host, "NetworkMode", json_string(cs->network)) < 0)
		return NULL;
	if (cs->memory > 0 && json_set_new(host, "Memory", json_integer(cs->memory)) < 0)
		return NULL;
	if (cs->cpus > 0 &&
	    json_set_new(host, "NanoCpus", json_integer((json_int_t)llround(cs->cpus * 1e9))) < 0)
		return NULL;
	if (cs->volumes && cs->n_volumes > 0) {
		json_t *b = json_array();

		if (json_set_new(host, "Binds", b) < 0)
			return NULL;
		for (size_t i = 0; i < cs->n_volumes && cs->volumes[i]; i++)
			if (json_array_append_new(b, json_string(cs->volumes[i])) < 0)
				return NULL;
	}
	if (json_set_new(host, "Init", json_boolean(cs->init)) < 0)
		return NULL;
	restart = json_object();
	if (json_set_new(host, "RestartPolicy", restart) < 0 ||
	    json_set_new(restart, "Name", json_string("no")) < 0)
		return NULL;

	return json_dumps(o, JSON_COMPACT);
}

/* RFC 3339 as Docker writes it ("2026-12-04T20:10:10.560628614Z", or with an offset) to Unix
 * seconds. Docker's zero time "0001-01-01T00:00:00Z" (and anything before 1970) is 0. */
static int parse_rfc3339(const char *s, double *ret)
{
	int Y, M, D, h, m, sec, n = 0;
	double frac = 0;
	struct tm tm = {};
	time_t t;
	const char *p;

	if (!s)
		return -EINVAL;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 || n == 0)
		return -EINVAL;
	p = s + n;
	if (*p == '.') {
		double scale = 0.1;

		p++;
		if (!(*p >= '0' && *p <= '9'))
			return -EINVAL;
		while (*p >= '0' && *p <= '9') {
			frac += (*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	tm.tm_year = Y - 1900;
	tm.tm_mon = M - 1;
	tm.tm_mday = D;
	tm.tm_hour = h;
	tm.tm_min = m;
	tm.tm_sec = sec;
	if (Y < 1970) {
		*ret = 0;
		return 0;
	}
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		int oh, om, k = 0;
		int sign = *p == '-' ? -1 : 1;

		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5)
			return -EINVAL;
		t -= sign * (oh * 3600 + om * 60);
		p += 1 + k;
	} else
		return -EINVAL;
	if (*p)
		return -EINVAL;
	*ret = (double)t + frac;
	return 0;
}

static int dup_json_string(json_t *v, char **ret)
{
	const char *s = json_string_value(v);

	if (!s) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

static int labels_to_container(json_t *labels, DockerContainer *c)
{
	const char *managed;

	if (!labels || json_is_null(labels))
		return 0;
	if (!json_is_object(labels))
		return -EINVAL;
	if (dup_json_string(json_object_get(labels, LABEL_POOL), &c->pool) < 0 ||
	    dup_json_string(json_object_get(labels, LABEL_SPEC), &c->spec) < 0)
		return -ENOMEM;
	managed = json_string_value(json_object_get(labels, LABEL_MANAGED));
	c->managed = managed && streq(managed, "true");
	return 0;
}

static int set_name(const char *n, DockerContainer *c)
{
	if (!n)
		return -EINVAL;
	if (*n == '/')
		n++;
	c->name = strdup(n);
	return c->name ? 0 : -ENOMEM;
}

/* "Exited (137) 3 seconds ago" -> 137; anything else -> -1. */
static int exit_code_from_status(const char *status)
{
	int code;

	if (status && sscanf(status, "Exited (%d)", &code) == 1)
		return code;
	return -1;
}

static int parse_list_item(json_t *it, DockerContainer *c)
{
	json_t *names, *created;
	const char *id, *state;
	int r;

	*c = (DockerContainer){ .exit_code = -1 };
	if (!json_is_object(it))
		return -EINVAL;
	id = json_string_value(json_object_get(it, "Id"));
	state = json_string_value(json_object_get(it, "State"));
	names = json_object_get(it, "Names");
	created = json_object_get(it, "Created");
	if (!id || !*id || !state || !json_is_array(names) || json_array_size(names) < 1 ||
	    !json_is_integer(created))
		return -EINVAL;

	c->id = strdup(id);
	c->state = strdup(state);
	if (!c->id || !c->state)
		return -ENOMEM;
	r = set_name(json_string_value(json_array_get(names, 0)), c);
	if (r < 0)
		return r;
	r = labels_to_container(json_object_get(it, "Labels"), c);
	if (r < 0)
		return r;
	c->created = (int64_t)json_integer_value(created);
	c->exit_code = exit_code_from_status(json_string_value(json_object_get(it, "Status")));
	return 0;
}

int docker_parse_list(const char *json, size_t len, DockerContainer **ret, size_t *ret_n)
{
	json_auto_t *j = NULL;
	DockerContainer *list;
	size_t n;

	if (!json || !ret || !ret_n)
		return -EINVAL;
	j = json_loadb(json, len, 0, NULL);
	if (!j || !json_is_array(j))
		return -EINVAL;
	n = json_array_size(j);
	list = calloc(n ? n : 1, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int r = parse_list_item(json_array_get(j, i), &list[i]);

		if (r < 0) {
			docker_containers_free(list, i + 1);
			return r;
		}
	}
	*ret = list;
	*ret_n = n;
	return 0;
}

int docker_parse_inspect(const char *json, size_t len, DockerContainer *ret)
{
	json_auto_t *j = NULL;
	DockerContainer c = { .exit_code = -1 };
	json_t *state, *config, *code;
	const char *id, *status, *created;
	double t;
	int r = -EINVAL;

	if (!json || !ret)
		return -EINVAL;
	j = json_loadb(json, len, 0, NULL);
	if (!j || !json_is_object(j))
		return -EINVAL;
	id = json_string_value(json_object_get(j, "Id"));
	state = json_object_get(j, "State");
	config = json_object_get(j, "Config");
	if (!id || !*id || !json_is_object(state))
		return -EINVAL;
	status = json_string_value(json_object_get(state, "Status"));
	code = json_object_get(state, "ExitCode");
	if (!status || !json_is_integer(code))
		return -EINVAL;

	c.id = strdup(id);
	c.state = strdup(status);
	if (!c.id || !c.state) {
		r = -ENOMEM;
		goto fail;
	}
	r = set_name(json_string_value(json_object_get(j, "Name")), &c);
	if (r < 0)
		goto fail;
	if (config && !json_is_null(config)) {
		r = -EINVAL;
		if (!json_is_object(config))
			goto fail;
		r = labels_to_container(json_object_get(config, "Labels"), &c);
		if (r < 0)
			goto fail;
	}
	c.exit_code = (int)json_integer_value(code);
	r = -EINVAL;
	if (parse_rfc3339(json_string_value(json_object_get(state, "StartedAt")), &c.started_at) <
		    0 ||
	    parse_rfc3339(json_string_value(json_object_get(state, "FinishedAt")),
			  &c.finished_at) < 0)
		goto fail;
	created = json_string_value(json_object_get(j, "Created"));
	if (parse_rfc3339(created, &t) < 0)
		goto fail;
	c.created = (int64_t)t;

	*ret = c;
	return 0;
fail:
	docker_container_clear(&c);
	return r;
}
