/* SPDX-License-Identifier: MIT */
/* RabbitMQ management API source. One filtered, paginated GET per query:
 *   /api/queues/{vhost}?page=1&page_size=500&name=^(q1|q2)$&use_regex=true&columns=...
 * RabbitMQ 3.10 applies name=/use_regex= only together with pagination (verified: without
 * page= the filter is ignored and every queue of the vhost is returned), so the request is
 * always paginated. What the broker returns is judged by a pure parser; the statistics-lag rule
 * ("a queue first seen less than RABBIT_STATS_WINDOW ago that reads zero is unknown") needs
 * memory and lives in the Rabbit object. See docs/sources.md. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "rabbitmq.h"

#define RABBIT_PAGE_SIZE 500
#define RABBIT_MAX_PAGES 64
/* Two collect_statistics_interval periods (5 s each) plus margin: measured on 3.10.8, a fresh
 * queue lists with only its name, then zeros for ~5 s, then real counts. */
#define RABBIT_STATS_WINDOW 12.0
/* Forget first-seen entries of queues nobody asked about for this long. */
#define RABBIT_SEEN_FORGET 3600.0
#define RABBIT_COLUMNS "name,state,messages,messages_ready,messages_unacknowledged"
#define RABBIT_EXCERPT_MAX 120

static const char WHY_ABSENT[] = "absent";
static const char WHY_DOWN[] = "down";
static const char WHY_NO_STATS[] = "no statistics yet";
static const char WHY_IMPLAUSIBLE[] = "implausible";

typedef struct {
	char *vhost;
	char *queue;
	double first;
	double last;
} Seen;

typedef struct RabbitQuery RabbitQuery;

struct Rabbit {
	Http *http;
	char *url;
	char *user;
	char *password;
	char *basic_token; /* base64(user:password): masked if a server echoes it */
	char *ca_file;
	bool verify;
	double timeout;
	Seen *seen;
	size_t n_seen;
	RabbitQuery *queries; /* in flight */
};

struct RabbitQuery {
	Rabbit *rabbit; /* NULL once the Rabbit is freed: the reply is then dropped */
	RabbitQuery *prev, *next;
	char *vhost;
	char **queues;
	size_t n;
	char *regex; /* escaped for the URL */
	double now;
	int page;
	QueueDepth *acc;
	RabbitCallback cb;
	void *userdata;
};

void queue_depths_free(QueueDepth *q, size_t n)
{
	if (!q)
		return;
	for (size_t i = 0; i < n; i++)
		free(q[i].name);
	free(q);
}

static void secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* ---- pure helpers ---- */

/* "^(q1|q2)$" with PCRE metacharacters in the names escaped (RabbitMQ matches with Erlang's
 * re, i.e. PCRE). Caller frees. */
static char *queues_regex(char *const *queues, size_t n)
{
	static const char meta[] = "\\^$.|?*+()[]{}-/#";
	size_t len = 5;
	for (size_t i = 0; i < n; i++)
		len += 2 * strlen(queues[i]) + 1;
	char *s = malloc(len), *p = s;
	if (!s)
		return NULL;
	*p++ = '^';
	*p++ = '(';
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			*p++ = '|';
		for (const char *c = queues[i]; *c; c++) {
			if (strchr(meta, *c))
				*p++ = '\\';
			*p++ = *c;
		}
	}
	*p++ = ')';
	*p++ = '$';
	*p = 0;
	return s;
}

static bool state_healthy(const char *s)
{
	/* Classic queues report "running" or "flow" (publisher flow control; counters are fine);
	 * "idle" is accepted for robustness (the web UI shows it; some versions report it). Anything
	 * else ("down", "crashed", "stopped", "minority", "terminated", ...) is unknown. */
	return streq(s, "running") || streq(s, "flow") || streq(s, "idle");
}

/* 1 = present and a non-negative integer, 0 = missing or null, -1 = present but not usable */
static int get_counter(json_t *item, const char *key, int64_t *ret)
{
	json_t *v = json_object_get(item, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*ret = json_integer_value(v);
	return 1;
}

static void judge_item(json_t *item, QueueDepth *q)
{
	json_t *state = json_object_get(item, "state");
	int64_t ready = 0, unacked = 0, messages = 0;
	int hr = get_counter(item, "messages_ready", &ready);
	int hu = get_counter(item, "messages_unacknowledged", &unacked);
	int hm = get_counter(item, "messages", &messages);

	q->valid = false;
	if (state && json_is_string(state) && !state_healthy(json_string_value(state))) {
		q->why = WHY_DOWN;
		return;
	}
	if (hr == 0 && hu == 0 && hm == 0) {
		/* 3.10.8 lists a just-declared queue with its name only. */
		q->why = WHY_NO_STATS;
		return;
	}
	if (hr != 1 || hu != 1 || hm < 0 || (hm == 1 && messages != ready + unacked)) {
		q->why = WHY_IMPLAUSIBLE;
		return;
	}
	q->valid = true;
	q->why = NULL;
	q->ready = ready;
	q->unacked = unacked;
}

int rabbit_parse_queues(const char *json, size_t len, char *const *queues, size_t n,
			QueueDepth **ret, int *ret_pages)
{
	json_error_t err;
	json_t *root = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &err);
	json_t *items;
	int pages = 1;

	if (!root)
		return -EBADMSG;
	if (json_is_array(root))
		items = root;
	else if (json_is_object(root)) {
		items = json_object_get(root, "items");
		json_t *pc = json_object_get(root, "page_count");
		if (!items || !json_is_array(items)) {
			json_decref(root);
			return -EBADMSG;
		}
		if (pc) {
			if (!json_is_integer(pc) || json_integer_value(pc) < 0 ||
			    json_integer_value(pc) > 1000000) {
				json_decref(root);
				return -EBADMSG;
			}
			pages = MAX((int)json_integer_value(pc), 1);
		}
	} else {
		json_decref(root);
		return -EBADMSG;
	}

	QueueDepth *q = calloc(MAX(n, (size_t)1), sizeof(QueueDepth));
	if (!q) {
		json_decref(root);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		q[i].name = strdup(queues[i]);
		if (!q[i].name) {
			queue_depths_free(q, n);
			json_decref(root);
			return -ENOMEM;
		}
		q[i].why = WHY_ABSENT;
	}

	size_t k;
	json_t *item;
	json_array_foreach(items, k, item) {
		if (!json_is_object(item)) {
			queue_depths_free(q, n);
			json_decref(root);
			return -EBADMSG;
		}
		json_t *name = json_object_get(item, "name");
		if (!name || !json_is_string(name))
			continue;
		for (size_t i = 0; i < n; i++)
			if (streq(json_string_value(name), queues[i]))
				judge_item(item, &q[i]);
	}

	json_decref(root);
	*ret = q;
	if (ret_pages)
		*ret_pages = pages;
	return 0;
}

/* Statistics lag: zeros from a queue first seen less than RABBIT_STATS_WINDOW ago are unknown.
 * Updates the first-seen table (absent queues are forgotten, so a re-created queue gets a new
 * window) and expires entries unseen for RABBIT_SEEN_FORGET. */
static int seen_apply(Seen **seen, size_t *n_seen, const char *vhost, QueueDepth *q, size_t n,
		      double now)
{
	for (size_t j = 0; j < *n_seen;) {
		if (now - (*seen)[j].last > RABBIT_SEEN_FORGET) {
			free((*seen)[j].vhost);
			free((*seen)[j].queue);
			(*seen)[j] = (*seen)[--*n_seen];
		} else
			j++;
	}
	for (size_t i = 0; i < n; i++) {
		size_t j;
		for (j = 0; j < *n_seen; j++)
			if (streq((*seen)[j].vhost, vhost) && streq((*seen)[j].queue, q[i].name))
				break;

		if (streq_ptr(q[i].why, WHY_ABSENT)) {
			if (j < *n_seen) {
				free((*seen)[j].vhost);
				free((*seen)[j].queue);
				(*seen)[j] = (*seen)[--*n_seen];
			}
			continue;
		}
		if (j == *n_seen) {
			Seen *s = realloc(*seen, (*n_seen + 1) * sizeof(Seen));
			if (!s)
				return -ENOMEM;
			*seen = s;
			s[j] = (Seen){.vhost = strdup(vhost), .queue = strdup(q[i].name),
				      .first = now, .last = now};
			if (!s[j].vhost || !s[j].queue) {
				free(s[j].vhost);
				free(s[j].queue);
				return -ENOMEM;
			}
			(*n_seen)++;
		}
		(*seen)[j].last = now;
		if (q[i].valid && q[i].ready == 0 && q[i].unacked == 0 &&
		    now - (*seen)[j].first < RABBIT_STATS_WINDOW) {
			q[i].valid = false;
			q[i].why = WHY_NO_STATS;
		}
	}
	return 0;
}

/* A short, printable excerpt of an error body: the "reason" of RabbitMQ's JSON error object if
 * there is one, else the first bytes; never longer than RABBIT_EXCERPT_MAX, and any occurrence
 * of SECRET is masked (the broker does not echo it; this is belt and braces). */
static void mask_all(char *s, const char *secret)
{
	if (!secret || !*secret)
		return;
	size_t sl = strlen(secret);
	for (char *p = strstr(s, secret); p; p = strstr(p + sl, secret))
		memset(p, '*', sl);
}

/* Base64 of S (for the Basic-auth token the server might echo back). Caller frees. */
static char *base64(const char *s)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(s), o = 0;
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)s[i] << 16;
		if (i + 1 < n)
			v |= (unsigned char)s[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)s[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = 0;
	return out;
}

/* A short, printable excerpt of an error body for the log. Secrets are masked over the whole
 * text before it is cut, so a secret straddling the cut cannot leak its first characters; any
 * "Basic <token>" the server echoes is masked whoever it belongs to. */
static void error_excerpt_masked(const char *body, size_t len, const char *const *secrets,
				 size_t n_secrets, char *buf, size_t size)
{
	json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
	const char *src = body ? body : "";
	size_t srclen = body ? len : 0;
	json_t *reason = root ? json_object_get(root, "reason") : NULL;

	if (reason && json_is_string(reason)) {
		src = json_string_value(reason);
		srclen = strlen(src);
	}
	char *t = malloc(srclen + 1);
	if (!t) {
		snprintf(buf, size, "(error body unavailable)");
		json_decref(root);
		return;
	}
	for (size_t i = 0; i < srclen; i++) {
		unsigned char c = (unsigned char)src[i];
		t[i] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
	}
	t[srclen] = 0;
	json_decref(root);

	for (size_t i = 0; i < n_secrets; i++)
		mask_all(t, secrets[i]);
	for (char *p = strcasestr(t, "Basic "); p; p = strcasestr(p + 6, "Basic "))
		for (char *q = p + 6; *q && *q != ' ' && *q != '"' && *q != ','; q++)
			*q = '*';

	size_t o = 0;
	for (; o < srclen && o + 1 < size && o < RABBIT_EXCERPT_MAX; o++)
		buf[o] = t[o];
	buf[o] = 0;
	while (o > 0 && buf[o - 1] == ' ')
		buf[--o] = 0;
	free(t);
}

_unused_ static void error_excerpt(const char *body, size_t len, const char *secret, char *buf,
				    size_t size)
{
	const char *secrets[] = {secret};
	error_excerpt_masked(body, len, secrets, secret ? 1 : 0, buf, size);
}

/* ---- the client ---- */

int rabbit_new(Http *h, const Config *c, Rabbit **ret)
{
	if (!h || !c || !c->rmq_url || !ret)
		return -EINVAL;
	Rabbit *r = calloc(1, sizeof(Rabbit));
	if (!r)
		return -ENOMEM;
	r->http = h;
	r->url = strdup(c->rmq_url);
	r->user = c->rmq_user ? strdup(c->rmq_user) : NULL;
	r->password = c->rmq_password ? strdup(c->rmq_password) : NULL;
	if (r->user && r->password) {
		_cleanup_free_ char *up = NULL;
		if (asprintf(&up, "%s:%s", r->user, r->password) >= 0) {
			r->basic_token = base64(up);
			explicit_bzero(up, strlen(up));
		}
	}
	r->ca_file = c->tls_ca_file ? strdup(c->tls_ca_file) : NULL;
	r->verify = c->tls_verify;
	r->timeout = c->rmq_timeout > 0 ? c->rmq_timeout : 3.0;
	if (!r->url || (c->rmq_user && !r->user) || (c->rmq_password && !r->password) ||
	    (c->tls_ca_file && !r->ca_file)) {
		rabbit_free(r);
		return -ENOMEM;
	}
	/* Strip trailing slashes: we append "/api/...". */
	for (size_t l = strlen(r->url); l > 0 && r->url[l - 1] == '/'; l--)
		r->url[l - 1] = 0;
	*ret = r;
	return 0;
}

static void query_free(RabbitQuery *q)
{
	if (!q)
		return;
	free(q->vhost);
	strv_free_n(q->queues, q->n);
	free(q->regex);
	queue_depths_free(q->acc, q->n);
	free(q);
}

static void query_unlink(RabbitQuery *q)
{
	if (!q->rabbit)
		return;
	if (q->prev)
		q->prev->next = q->next;
	else
		q->rabbit->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

Rabbit *rabbit_free(Rabbit *r)
{
	if (!r)
		return NULL;
	/* Abort in-flight queries without calling back. */
	for (RabbitQuery *q = r->queries, *next; q; q = next) {
		next = q->next;
		http_cancel(r->http, q);
		q->rabbit = NULL;
		query_free(q);
	}
	r->queries = NULL;
	for (size_t j = 0; j < r->n_seen; j++) {
		free(r->seen[j].vhost);
		free(r->seen[j].queue);
	}
	free(r->seen);
	free(r->url);
	free(r->user);
	secret_free(r->password);
	secret_free(r->basic_token);
	free(r->ca_file);
	free(r);
	return NULL;
}

static void on_http(const HttpResponse *resp, void *userdata);

static int query_submit(RabbitQuery *q)
{
	Rabbit *r = q->rabbit;
	_cleanup_free_ char *vh = http_escape(q->vhost);
	_cleanup_free_ char *url = NULL;
	if (!vh)
		return -ENOMEM;
	if (asprintf(&url, "%s/api/queues/%s?page=%d&page_size=%d&name=%s&use_regex=true&columns=%s",
		     r->url, vh, q->page, RABBIT_PAGE_SIZE, q->regex, RABBIT_COLUMNS) < 0)
		return -ENOMEM;
	HttpRequest req = {
		.method = "GET",
		.url = url,
		.user = r->user,
		.password = r->password,
		.ca_file = r->ca_file,
		.insecure = !r->verify,
		.timeout = r->timeout,
		.max_body = 0,
	};
	return http_submit(r->http, &req, on_http, q);
}

static void query_finish(RabbitQuery *q, int err, const char *error)
{
	query_unlink(q);
	if (q->rabbit && err >= 0 && q->acc) {
		int k = seen_apply(&q->rabbit->seen, &q->rabbit->n_seen, q->vhost, q->acc, q->n,
				   q->now);
		if (k < 0) {
			err = k;
			error = "out of memory";
		}
	}
	if (q->rabbit) {
		if (err < 0)
			q->cb(err, error, NULL, 0, q->userdata);
		else
			q->cb(0, NULL, q->acc, q->n, q->userdata);
	}
	query_free(q);
}

static void on_http(const HttpResponse *resp, void *userdata)
{
	RabbitQuery *q = userdata;
	char msg[256], ex[RABBIT_EXCERPT_MAX + 1];

	if (!q->rabbit) {
		query_free(q);
		return;
	}
	if (resp->error < 0) {
		if (resp->error == -ETIMEDOUT)
			snprintf(msg, sizeof msg, "management API timed out after %.1f s",
				 q->rabbit->timeout);
		else
			snprintf(msg, sizeof msg, "management API: %s",
				 resp->error_text ? resp->error_text : strerror(-resp->error));
		query_finish(q, resp->error, msg);
		return;
	}
	if (resp->status < 200 || resp->status > 299) {
		const char *secrets[] = {q->rabbit->password, q->rabbit->basic_token};
		error_excerpt_masked(resp->body, resp->body_len, secrets, ELEMENTSOF(secrets), ex,
				     sizeof ex);
		snprintf(msg, sizeof msg, "HTTP %ld from management API%s%s", resp->status,
			 ex[0] ? ": " : "", ex);
		query_finish(q, -EIO, msg);
		return;
	}

	QueueDepth *page = NULL;
	int pages = 1;
	int k = rabbit_parse_queues(resp->body, resp->body_len, q->queues, q->n, &page, &pages);
	if (k < 0) {
		query_finish(q, k, k == -EBADMSG ? "garbled JSON from management API" : "out of memory");
		return;
	}
	if (!q->acc)
		q->acc = TAKE_PTR(page);
	else {
		for (size_t i = 0; i < q->n; i++)
			if (streq_ptr(q->acc[i].why, WHY_ABSENT) && !streq_ptr(page[i].why, WHY_ABSENT)) {
				free(q->acc[i].name);
				q->acc[i] = page[i];
				page[i].name = NULL;
			}
		queue_depths_free(page, q->n);
	}

	if (q->page < pages && q->page < RABBIT_MAX_PAGES) {
		q->page++;
		k = query_submit(q);
		if (k < 0)
			query_finish(q, k, "could not queue the next page request");
		return;
	}
	query_finish(q, 0, NULL);
}

int rabbit_query(Rabbit *r, const char *vhost, char *const *queues, size_t n, double now,
		 RabbitCallback cb, void *userdata)
{
	if (!r || !vhost || !queues || n == 0 || !cb)
		return -EINVAL;
	_cleanup_free_ char *re = NULL;
	RabbitQuery *q = calloc(1, sizeof(RabbitQuery));
	if (!q)
		return -ENOMEM;
	q->rabbit = r;
	q->now = now;
	q->page = 1;
	q->cb = cb;
	q->userdata = userdata;
	q->n = n;
	q->vhost = strdup(vhost);
	q->queues = calloc(n, sizeof(char *));
	if (!q->vhost || !q->queues)
		goto oom;
	for (size_t i = 0; i < n; i++)
		if (!(q->queues[i] = strdup(queues[i])))
			goto oom;
	re = queues_regex(queues, n);
	if (!re)
		goto oom;
	q->regex = http_escape(re);
	if (!q->regex)
		goto oom;

	int k = query_submit(q);
	if (k < 0) {
		q->rabbit = NULL;
		query_free(q);
		return k;
	}
	q->next = r->queries;
	if (q->next)
		q->next->prev = q;
	r->queries = q;
	return 0;
oom:
	q->rabbit = NULL;
	query_free(q);
	return -ENOMEM;
}
