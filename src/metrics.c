/* SPDX-License-Identifier: MIT */
/* The Prometheus endpoint: HTTP/1.0 on the sd-event loop. One listening socket; each accepted
 * connection gets an io source and a 5 s deadline. We read the request head (at most 8 KiB),
 * answer from a copy of the current text, write it out as the socket accepts it (EPOLLOUT),
 * and close. Nothing here blocks: a client that connects and sends nothing, or reads slowly,
 * only holds its own connection until the deadline. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "metrics.h"

#define REQUEST_MAX 8192
#define CONN_TIMEOUT_USEC (5 * 1000000ULL)
#define CONN_MAX 64

typedef struct Conn Conn;

struct Conn {
	Metrics *m;
	Conn *prev, *next;
	int fd;
	sd_event_source *io, *timer;
	char req[REQUEST_MAX + 1];
	size_t req_len;
	char *resp; /* headers + body, built when the request head is complete */
	size_t resp_len, resp_off;
};

struct Metrics {
	sd_event *event;
	int fd;
	sd_event_source *listen_source;
	sd_event_source *rearm; /* re-enables the listener after EMFILE and friends */
	char *text;
	size_t text_len;
	Conn *conns;
	size_t n_conns;
};

static void conn_free(Conn *c)
{
	if (!c)
		return;
	if (c->m) {
		if (c->prev)
			c->prev->next = c->next;
		else
			c->m->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		c->m->n_conns--;
	}
	sd_event_source_disable_unref(c->io);
	sd_event_source_disable_unref(c->timer);
	if (c->fd >= 0)
		close(c->fd);
	free(c->resp);
	free(c);
}

static int conn_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	conn_free(userdata);
	return 0;
}

static int conn_respond(Conn *c, int code, const char *reason, const char *extra_headers,
                        const char *body, size_t body_len, bool head_only)
{
	char hdr[512];
	int n;

	n = snprintf(hdr, sizeof(hdr),
	             "HTTP/1.0 %d %s\r\n"
	             "Content-Type: %s\r\n"
	             "Content-Length: %zu\r\n"
	             "%s"
	             "Connection: close\r\n"
	             "\r\n",
	             code, reason,
	             code == 200 ? "text/plain; version=0.0.4; charset=utf-8"
	                         : "text/plain; charset=utf-8",
	             body_len, extra_headers ? extra_headers : "");
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -EINVAL;
	if (head_only)
		body_len = 0;
	c->resp = malloc((size_t)n + body_len);
	if (!c->resp)
		return -ENOMEM;
	memcpy(c->resp, hdr, (size_t)n);
	if (body_len > 0)
		memcpy(c->resp + n, body, body_len);
	c->resp_len = (size_t)n + body_len;
	c->resp_off = 0;
	return 0;
}

#define RESPOND_TEXT(c, code, reason, hdrs, text, head)                                            \
	conn_respond(c, code, reason, hdrs, text, strlen(text), head)

/* Parse the request line in c->req and build the response. */
static int conn_handle(Conn *c)
{
	char *line = c->req, *eol, *method, *target, *q, *save = NULL;
	bool head;

	eol = strpbrk(line, "\r\n");
	if (eol)
		*eol = '\0';
	method = strtok_r(line, " ", &save);
	target = strtok_r(NULL, " ", &save);
	if (!method || !target || target[0] != '/')
		return RESPOND_TEXT(c, 400, "Bad Request", NULL, "Bad Request\n", false);

	head = streq(method, "HEAD");
	if (!head && !streq(method, "GET"))
		return RESPOND_TEXT(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
		                    "Method Not Allowed\n", false);

	q = strchr(target, '?');
	if (q)
		*q = '\0';
	if (!streq(target, "/metrics") && !streq(target, "/"))
		return RESPOND_TEXT(c, 404, "Not Found", NULL, "Not Found\n", head);

	return conn_respond(c, 200, "OK", NULL, c->m->text ? c->m->text : "", c->m->text_len, head);
}

/* The request head is complete at an empty line; a bare request line without a version
 * (HTTP/0.9 style, e.g. from `printf 'GET /metrics\n' | nc`) is complete at its end. */
static bool request_complete(const char *req, size_t len)
{
	const char *eol, *sp;

	if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
		return true;
	eol = memchr(req, '\n', len);
	if (!eol)
		return false;
	sp = memchr(req, ' ', (size_t)(eol - req));
	if (!sp)
		return true;
	/* "GET /x" without " HTTP/1.x" */
	return !memchr(sp + 1, ' ', (size_t)(eol - sp - 1));
}

static int conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Conn *c = userdata;
	int r;

	if (!c->resp) {
		ssize_t k;

		if (revents & (EPOLLERR | EPOLLHUP) && !(revents & EPOLLIN)) {
			conn_free(c);
			return 0;
		}
		k = recv(c->fd, c->req + c->req_len, REQUEST_MAX - c->req_len, 0);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			conn_free(c);
			return 0;
		}
		if (k == 0) { /* closed before a complete request */
			conn_free(c);
			return 0;
		}
		c->req_len += (size_t)k;
		c->req[c->req_len] = '\0';
		if (memchr(c->req, '\0', c->req_len)) {
			r = RESPOND_TEXT(c, 400, "Bad Request", NULL, "Bad Request\n", false);
		} else if (request_complete(c->req, c->req_len)) {
			r = conn_handle(c);
		} else if (c->req_len >= REQUEST_MAX) {
			r = RESPOND_TEXT(c, 431, "Request Header Fields Too Large", NULL,
			                 "Request Header Fields Too Large\n", false);
		} else
			return 0;
		if (r < 0) {
			conn_free(c);
			return 0;
		}
		r = sd_event_source_set_io_events(c->io, EPOLLOUT);
		if (r < 0) {
			conn_free(c);
			return 0;
		}
		/* Fall through: the socket is almost always writable right away. */
	}

	while (c->resp_off < c->resp_len) {
		ssize_t k = send(c->fd, c->resp + c->resp_off, c->resp_len - c->resp_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0; /* wait for EPOLLOUT */
			conn_free(c);
			return 0;
		}
		c->resp_off += (size_t)k;
	}
	/* All written: signal the end of the response; the kernel delivers the rest. Unread
	 * input (a request body, pipelined bytes) would make close() send a reset that can
	 * destroy the answer in flight, so drain what has arrived (bounded) first. */
	(void)shutdown(c->fd, SHUT_WR);
	for (size_t drained = 0; drained < 65536;) {
		char sink[4096];
		ssize_t k = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (k <= 0)
			break;
		drained += (size_t)k;
	}
	conn_free(c);
	return 0;
}

static int metrics_rearm(sd_event_source *s, uint64_t usec, void *userdata)
{
	Metrics *m = userdata;

	m->rearm = sd_event_source_disable_unref(m->rearm);
	(void)sd_event_source_set_enabled(m->listen_source, SD_EVENT_ON);
	return 0;
}

static int metrics_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	Metrics *m = userdata;
	uint64_t now;

	for (;;) {
		Conn *c;
		int cfd, r;

		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN)
				return 0;
			/* Out of descriptors or memory: the listener would stay readable and
			 * spin the loop; pause it for a second instead. */
			if (!m->rearm && sd_event_now(m->event, CLOCK_MONOTONIC, &now) >= 0 &&
			    sd_event_add_time(m->event, &m->rearm, CLOCK_MONOTONIC,
			                      now + 1000000ULL, 0, metrics_rearm, m) >= 0)
				(void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
			return 0;
		}
		if (m->n_conns >= CONN_MAX) {
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->fd = cfd;
		c->m = m;
		c->next = m->conns;
		if (m->conns)
			m->conns->prev = c;
		m->conns = c;
		m->n_conns++;

		r = sd_event_add_io(m->event, &c->io, cfd, EPOLLIN, conn_io, c);
		if (r >= 0)
			r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
		if (r >= 0)
			r = sd_event_add_time(m->event, &c->timer, CLOCK_MONOTONIC,
			                      now + CONN_TIMEOUT_USEC, 0, conn_timeout, c);
		if (r < 0)
			conn_free(c);
	}
}

/* "127.0.0.1:9687", "localhost:9687", "0.0.0.0:9687", "*:9687", "[::1]:9687", "[::]:9687" */
static int parse_listen(const char *listen_addr, struct sockaddr_storage *ret, socklen_t *ret_len,
                        char **ret_error)
{
	_cleanup_free_ char *host = NULL;
	const char *colon, *port_s;
	char *end;
	unsigned long port;
	bool v6 = false;

	if (listen_addr[0] == '[') {
		const char *close_br = strchr(listen_addr, ']');
		if (!close_br || close_br[1] != ':')
			goto bad;
		host = strndup(listen_addr + 1, (size_t)(close_br - listen_addr - 1));
		port_s = close_br + 2;
		v6 = true;
	} else {
		colon = strrchr(listen_addr, ':');
		if (!colon)
			goto bad;
		host = strndup(listen_addr, (size_t)(colon - listen_addr));
		port_s = colon + 1;
	}
	if (!host)
		return -ENOMEM;

	errno = 0;
	port = strtoul(port_s, &end, 10);
	if (!*port_s || *end || errno || port > 65535 || port_s[0] == '-' || port_s[0] == '+')
		goto bad;

	memset(ret, 0, sizeof(*ret));
	if (v6) {
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)ret;
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1)
			goto bad;
		*ret_len = sizeof(*sa);
	} else {
		struct sockaddr_in *sa = (struct sockaddr_in *)ret;
		sa->sin_family = AF_INET;
		sa->sin_port = htons((uint16_t)port);
		/* No name resolution: it would block, and a metrics address should be explicit. */
		if (streq(host, "localhost"))
			sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (streq(host, "*") || streq(host, ""))
			sa->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
			goto bad;
		*ret_len = sizeof(*sa);
	}
	return 0;

bad:
	if (asprintf(ret_error,
	             "metrics.listen %s: expected HOST:PORT with HOST an IPv4 address, "
	             "\"localhost\" or [IPv6], and PORT 0-65535",
	             listen_addr) < 0)
		*ret_error = NULL;
	return -EINVAL;
}

int metrics_new(sd_event *e, const char *listen_addr, Metrics **ret, char **ret_error)
{
	struct sockaddr_storage sa;
	socklen_t sa_len = 0;
	const char *step = NULL;
	Metrics *m;
	int r, one = 1;

	*ret_error = NULL;
	r = parse_listen(listen_addr, &sa, &sa_len, ret_error);
	if (r < 0)
		return r;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->event = sd_event_ref(e);
	m->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (m->fd < 0) {
		r = -errno;
		step = "socket";
		goto fail;
	}
	if (setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
		r = -errno;
		step = "setsockopt";
		goto fail;
	}
	if (bind(m->fd, (struct sockaddr *)&sa, sa_len) < 0) {
		r = -errno;
		goto fail;
	}
	if (listen(m->fd, SOMAXCONN) < 0) {
		r = -errno;
		step = "listen";
		goto fail;
	}
	r = sd_event_add_io(e, &m->listen_source, m->fd, EPOLLIN, metrics_accept, m);
	if (r < 0) {
		step = "event source";
		goto fail;
	}
	*ret = m;
	return 0;

fail:
	if (asprintf(ret_error, "metrics.listen %s: %s%s%s", listen_addr, step ? step : "",
	             step ? ": " : "", strerror(-r)) < 0)
		*ret_error = NULL;
	metrics_free(m);
	return r;
}

Metrics *metrics_free(Metrics *m)
{
	if (!m)
		return NULL;
	while (m->conns)
		conn_free(m->conns);
	sd_event_source_disable_unref(m->listen_source);
	sd_event_source_disable_unref(m->rearm);
	if (m->fd >= 0)
		close(m->fd);
	sd_event_unref(m->event);
	free(m->text);
	free(m);
	return NULL;
}

int metrics_update(Metrics *m, const char *text)
{
	char *copy;
	size_t len = text ? strlen(text) : 0;

	copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, text ? text : "", len + 1);
	free(m->text);
	m->text = copy;
	m->text_len = len;
	return 0;
}
