/* SPDX-License-Identifier: MIT */
/* One curl multi handle driven by sd-event, the pattern of systemd's src/import/curl-util.c:
 *   - curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION); each gets an sd-event io
 *     source, remembered with curl_multi_assign() so the next call can update or drop it;
 *   - curl tells us when it next wants to run (CURLMOPT_TIMERFUNCTION); we keep one one-shot
 *     CLOCK_MONOTONIC time source for that;
 *   - when either fires we call curl_multi_socket_action() and then collect finished transfers
 *     with curl_multi_info_read(), calling each request's callback.
 * Nothing here blocks. Callbacks run from the loop, outside any curl callback, after their
 * transfer has been detached from the multi handle, so they may submit new requests. They must
 * not call http_free() on the Http that is calling them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"
#include "macro.h"

#define HTTP_DEFAULT_TIMEOUT 30.0
#define HTTP_MAX_CONNECT_TIMEOUT_MS 5000L
#define HTTP_DEFAULT_MAX_BODY (4u * 1024u * 1024u)

typedef struct HttpReq HttpReq;

struct HttpReq {
	Http *http;
	CURL *easy;
	struct curl_slist *headers;
	char *url;
	char *unix_socket;
	char *user;
	char *password;
	char *ca_file;
	char *req_body;

	char *buf; /* response body, NUL-terminated */
	size_t len, cap;
	size_t max_body;
	bool too_big;
	char *api_version;

	char errbuf[CURL_ERROR_SIZE];
	HttpCallback cb;
	void *userdata;
	uint64_t start_usec;

	HttpReq *prev, *next;
};

struct Http {
	sd_event *event;
	CURLM *multi;
	sd_event_source *timer;
	HttpReq *requests;
	size_t n_requests;
	uint64_t total;
	unsigned n_io; /* io sources we created for curl sockets (for sanity on free) */
};

static sd_event_source *source_free(sd_event_source *s)
{
	if (s) {
		(void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
		sd_event_source_unref(s);
	}
	return NULL;
}

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void req_unlink(HttpReq *r)
{
	Http *h = r->http;

	if (r->prev)
		r->prev->next = r->next;
	else if (h->requests == r)
		h->requests = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	h->n_requests--;
}

static void req_free(HttpReq *r)
{
	if (!r)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	free(r->url);
	free(r->unix_socket);
	free(r->user);
	if (r->password) {
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	free(r->ca_file);
	free(r->req_body);
	free(r->buf);
	free(r->api_version);
	free(r);
}

/* ---- completion ---- */

static int map_result(const HttpReq *r, CURLcode code, const char **ret_text)
{
	const char *text = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);

	switch (code) {
	case CURLE_OK:
		*ret_text = NULL;
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		*ret_text = text;
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		if (r->unix_socket && access(r->unix_socket, F_OK) < 0 && errno == ENOENT) {
			*ret_text = "socket does not exist";
			return -ENOENT;
		}
		*ret_text = text;
		return -ECONNREFUSED;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
		if (r->too_big || code == CURLE_FILESIZE_EXCEEDED) {
			*ret_text = "response body too large";
			return -EMSGSIZE;
		}
		*ret_text = text;
		return -EIO;
	default:
		*ret_text = text;
		return -EIO;
	}
}

static void req_finish(HttpReq *r, CURLcode code)
{
	Http *h = r->http;
	HttpResponse resp = {};
	long status = 0;

	curl_multi_remove_handle(h->multi, r->easy);
	req_unlink(r);

	resp.error = map_result(r, code, &resp.error_text);
	if (resp.error == 0) {
		(void)curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		resp.status = status;
	}
	resp.body = r->buf ? r->buf : "";
	resp.body_len = r->len;
	resp.api_version = r->api_version;
	resp.elapsed = (double)(now_usec() - r->start_usec) / 1e6;

	if (r->cb)
		r->cb(&resp, r->userdata);
	req_free(r);
}

static void check_finished(Http *h)
{
	CURLMsg *msg;
	int left;

	/* The callback may submit requests (curl_multi_add_handle) between two reads; that is
	 * allowed, and we never keep MSG across a call that could invalidate it. */
	while ((msg = curl_multi_info_read(h->multi, &left))) {
		HttpReq *r = NULL;
		CURLcode code;
		char *p = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		code = msg->data.result;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p) != CURLE_OK || !p)
			continue;
		r = (HttpReq *)p;
		req_finish(r, code);
	}
}

/* ---- sd-event glue ---- */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Http *h = userdata;
	int action = 0, running;

	if (revents & EPOLLIN)
		action |= CURL_CSELECT_IN;
	if (revents & EPOLLOUT)
		action |= CURL_CSELECT_OUT;
	if (revents & (EPOLLERR | EPOLLHUP))
		action |= CURL_CSELECT_ERR;

	(void)curl_multi_socket_action(h->multi, fd, action, &running);
	check_finished(h);
	return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	Http *h = userdata;
	int running;

	(void)curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_finished(h);
	return 0;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	Http *h = userp;
	sd_event_source *io = socketp;
	uint32_t events = 0;
	int r;

	if (what == CURL_POLL_REMOVE) {
		if (io) {
			source_free(io);
			h->n_io--;
			curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}

	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= EPOLLOUT;

	if (io) {
		r = sd_event_source_set_io_events(io, events);
		if (r < 0)
			return -1;
		r = sd_event_source_set_enabled(io, SD_EVENT_ON);
		return r < 0 ? -1 : 0;
	}

	r = sd_event_add_io(h->event, &io, fd, events, on_io, h);
	if (r < 0)
		return -1;
	(void)sd_event_source_set_description(io, "http-io");
	if (curl_multi_assign(h->multi, fd, io) != CURLM_OK) {
		source_free(io);
		return -1;
	}
	h->n_io++;
	return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	Http *h = userp;
	uint64_t usec;
	int r;

	if (timeout_ms < 0) {
		if (h->timer)
			(void)sd_event_source_set_enabled(h->timer, SD_EVENT_OFF);
		return 0;
	}

	/* Whole milliseconds, rounded up, so we never wake before curl is due; 0 = at once. */
	usec = (uint64_t)timeout_ms * 1000u;
	if (h->timer) {
		r = sd_event_source_set_time_relative(h->timer, usec);
		if (r < 0)
			return -1;
		r = sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT);
		return r < 0 ? -1 : 0;
	}

	r = sd_event_add_time_relative(h->event, &h->timer, CLOCK_MONOTONIC, usec,
				       /* accuracy */ 1000, on_timer, h);
	if (r < 0)
		return -1;
	(void)sd_event_source_set_description(h->timer, "http-timer");
	return 0;
}

/* ---- public ---- */

int http_new(sd_event *e, Http **ret)
{
	static bool global_done = false;
	Http *h;

	if (!e || !ret)
		return -EINVAL;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -EIO;
		global_done = true;
	}

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->event = sd_event_ref(e);
	h->multi = curl_multi_init();
	if (!h->multi) {
		http_free(h);
		return -ENOMEM;
	}
	if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) != CURLM_OK ||
	    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK) {
		http_free(h);
		return -EIO;
	}
	*ret = h;
	return 0;
}

Http *http_free(Http *h)
{
	if (!h)
		return NULL;

	while (h->requests) {
		HttpReq *r = h->requests;

		if (h->multi)
			curl_multi_remove_handle(h->multi, r->easy);
		req_unlink(r);
		req_free(r);
	}
	if (h->multi)
		curl_multi_cleanup(h->multi); /* closes cached connections: CURL_POLL_REMOVE each */
	source_free(h->timer);
	sd_event_unref(h->event);
	free(h);
	return NULL;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	HttpReq *r = userdata;
	size_t n = size * nmemb;

	if (n > r->max_body || r->len > r->max_body - n) {
		r->too_big = true;
		return 0; /* abort: CURLE_WRITE_ERROR */
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = MAX(r->cap * 2, r->len + n + 1);
		char *b;

		cap = MAX(cap, (size_t)4096);
		b = realloc(r->buf, cap);
		if (!b)
			return 0;
		r->buf = b;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
	r->buf[r->len] = 0;
	return n;
}

static size_t header_cb(char *data, size_t size, size_t nitems, void *userdata)
{
	static const char name[] = "api-version:";
	HttpReq *r = userdata;
	size_t n = size * nitems, k = sizeof(name) - 1;
	const char *v, *end;
	char *copy;

	if (n <= k || strncasecmp(data, name, k) != 0)
		return n;
	v = data + k;
	end = data + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	copy = strndup(v, (size_t)(end - v));
	if (!copy)
		return 0;
	free(r->api_version);
	r->api_version = copy;
	return n;
}

static int dup_opt(char **dst, const char *src)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

#define SETOPT(easy, opt, val)                                                                     \
	do {                                                                                       \
		if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK)                            \
			return -EIO;                                                               \
	} while (0)

static int req_setup(HttpReq *r, const HttpRequest *req)
{
	const char *method = req->method ? req->method : "GET";
	double timeout = req->timeout > 0 ? req->timeout : HTTP_DEFAULT_TIMEOUT;
	long timeout_ms, connect_ms;
	CURL *c = r->easy;

	if (dup_opt(&r->url, req->url) < 0 || dup_opt(&r->unix_socket, req->unix_socket) < 0 ||
	    dup_opt(&r->user, req->user) < 0 || dup_opt(&r->password, req->password) < 0 ||
	    dup_opt(&r->ca_file, req->ca_file) < 0 || dup_opt(&r->req_body, req->body) < 0)
		return -ENOMEM;

	timeout_ms = timeout * 1000.0 >= (double)LONG_MAX ? LONG_MAX : (long)ceil(timeout * 1000.0);
	connect_ms = MIN(timeout_ms, HTTP_MAX_CONNECT_TIMEOUT_MS);

	SETOPT(c, CURLOPT_PRIVATE, (char *)r);
	SETOPT(c, CURLOPT_URL, r->url);
	SETOPT(c, CURLOPT_NOSIGNAL, 1L);
	SETOPT(c, CURLOPT_VERBOSE, 0L);
	SETOPT(c, CURLOPT_ERRORBUFFER, r->errbuf);
	SETOPT(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	SETOPT(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	SETOPT(c, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the string form; the bitmask is deprecated */
	SETOPT(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SETOPT(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(c, CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(c, CURLOPT_WRITEDATA, r);
	SETOPT(c, CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(c, CURLOPT_HEADERDATA, r);
	SETOPT(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
	SETOPT(c, CURLOPT_USERAGENT, "sluice");

	if (r->unix_socket)
		SETOPT(c, CURLOPT_UNIX_SOCKET_PATH, r->unix_socket);

	if (req->insecure) {
		SETOPT(c, CURLOPT_SSL_VERIFYPEER, 0L);
		SETOPT(c, CURLOPT_SSL_VERIFYHOST, 0L);
	} else {
		SETOPT(c, CURLOPT_SSL_VERIFYPEER, 1L);
		SETOPT(c, CURLOPT_SSL_VERIFYHOST, 2L);
	}
	if (r->ca_file)
		SETOPT(c, CURLOPT_CAINFO, r->ca_file);

	if (r->user) {
		SETOPT(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SETOPT(c, CURLOPT_USERNAME, r->user);
		SETOPT(c, CURLOPT_PASSWORD, r->password ? r->password : "");
	}

	/* No "Expect: 100-continue" round trip for larger bodies. */
	r->headers = curl_slist_append(r->headers, "Expect:");
	if (!r->headers)
		return -ENOMEM;
	if (r->req_body || strcasecmp(method, "POST") == 0 || strcasecmp(method, "PUT") == 0) {
		/* With no body, "Content-Type:" removes curl's default form type. */
		struct curl_slist *l = curl_slist_append(
			r->headers, r->req_body ? "Content-Type: application/json" : "Content-Type:");
		if (!l)
			return -ENOMEM;
		r->headers = l;
	}
	SETOPT(c, CURLOPT_HTTPHEADER, r->headers);

	if (strcasecmp(method, "GET") == 0) {
		SETOPT(c, CURLOPT_HTTPGET, 1L);
	} else if (strcasecmp(method, "HEAD") == 0) {
		SETOPT(c, CURLOPT_NOBODY, 1L);
	} else if (strcasecmp(method, "POST") == 0 || strcasecmp(method, "PUT") == 0) {
		SETOPT(c, CURLOPT_POST, 1L);
		/* Always give curl the body (possibly empty): without POSTFIELDS it would read
		 * the body from stdin. */
		SETOPT(c, CURLOPT_POSTFIELDS, r->req_body ? r->req_body : "");
		SETOPT(c, CURLOPT_POSTFIELDSIZE_LARGE,
		       (curl_off_t)(r->req_body ? strlen(r->req_body) : 0));
		if (strcasecmp(method, "PUT") == 0)
			SETOPT(c, CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (strcasecmp(method, "DELETE") == 0) {
		SETOPT(c, CURLOPT_CUSTOMREQUEST, "DELETE");
	} else
		return -EINVAL;

	return 0;
}

int http_submit(Http *h, const HttpRequest *req, HttpCallback cb, void *userdata)
{
	HttpReq *r;
	int k;

	if (!h || !req || !req->url)
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->http = h;
	r->cb = cb;
	r->userdata = userdata;
	r->max_body = req->max_body > 0 ? req->max_body : HTTP_DEFAULT_MAX_BODY;
	r->easy = curl_easy_init();
	if (!r->easy) {
		req_free(r);
		return -ENOMEM;
	}
	k = req_setup(r, req);
	if (k < 0) {
		req_free(r);
		return k;
	}

	r->start_usec = now_usec();
	if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		req_free(r);
		return -EIO;
	}
	r->next = h->requests;
	if (h->requests)
		h->requests->prev = r;
	h->requests = r;
	h->n_requests++;
	h->total++;
	return 0;
}

size_t http_cancel(Http *h, void *userdata)
{
	HttpReq *r, *next;
	size_t n = 0;

	if (!h)
		return 0;
	for (r = h->requests; r; r = next) {
		next = r->next;
		if (r->userdata != userdata)
			continue;
		curl_multi_remove_handle(h->multi, r->easy);
		req_unlink(r);
		req_free(r);
		n++;
	}
	return n;
}

size_t http_in_flight(const Http *h)
{
	return h ? h->n_requests : 0;
}

uint64_t http_requests_total(const Http *h)
{
	return h ? h->total : 0;
}

char *http_escape(const char *s)
{
	char *e, *ret;

	if (!s)
		return NULL;
#if LIBCURL_VERSION_NUM >= 0x075200 /* 7.82: no handle needed */
	e = curl_easy_escape(NULL, s, (int)strlen(s));
#else
	CURL *c = curl_easy_init();
	if (!c)
		return NULL;
	e = curl_easy_escape(c, s, (int)strlen(s));
	curl_easy_cleanup(c);
#endif
	if (!e)
		return NULL;
	ret = strdup(e);
	curl_free(e);
	return ret;
}
