/* SPDX-License-Identifier: MIT */
/* AMQP source: passive queue.declare on a worker thread (librabbitmq blocks). The loop thread
 * queues jobs under a mutex and wakes the worker with a condvar; the worker appends finished
 * jobs to a done list and writes a byte to a pipe watched by an sd-event io source, whose
 * handler runs the callbacks on the loop thread. The worker never calls a callback. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* Our own header is also called amqp.h and src/ is on the <> search path (-I), so <amqp.h> would
 * find ours. Include librabbitmq's by its path first; its guard (AMQP_H) then makes the library's
 * own #include <amqp.h> lines harmless. With -iquote src instead of -I src, <amqp.h> would do. */
/* librabbitmq's <amqp.h>, not ours: src/ is on the quote path only (-iquote). */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "amqp.h"
#include "macro.h"

#define AMQP_HEARTBEAT 30
#define AMQP_CHANNEL 1

typedef struct Job Job;
struct Job {
	Job *next;
	char *vhost;
	char **queues;
	size_t n;
	RabbitCallback cb;
	void *userdata;
	int r;
	char *error;
	QueueDepth *depths;
};

typedef struct {
	char *vhost;
	amqp_connection_state_t conn;
	bool channel_open;
} Conn;

struct Amqp {
	sd_event *event;
	sd_event_source *io;
	int pipe[2];

	/* immutable after new(), read by the worker */
	char *host;
	int port;
	bool ssl;
	char *user;
	char *password;
	char *ca_file;
	bool verify;
	struct timeval timeout;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;      /* under lock */
	int busy_fd;    /* under lock: socket the worker is blocked on, or -1 */
	Job *pending;   /* under lock, FIFO */
	Job *done;      /* under lock, FIFO */
	bool in_dispatch, free_requested; /* loop thread only */

	/* worker only */
	Conn *conns;
	size_t n_conns;
};

static void job_free(Job *j)
{
	if (!j)
		return;
	free(j->vhost);
	strv_free_n(j->queues, j->n);
	free(j->error);
	queue_depths_free(j->depths, j->n);
	free(j);
}

static void jobs_free(Job *j)
{
	while (j) {
		Job *next = j->next;
		job_free(j);
		j = next;
	}
}

static void job_append(Job **list, Job *j)
{
	j->next = NULL;
	while (*list)
		list = &(*list)->next;
	*list = j;
}

static void secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* ---- worker side ---- */

static void set_busy_fd(Amqp *a, amqp_connection_state_t conn)
{
	pthread_mutex_lock(&a->lock);
	a->busy_fd = conn ? amqp_get_sockfd(conn) : -1;
	pthread_mutex_unlock(&a->lock);
}

static bool stopping(Amqp *a)
{
	pthread_mutex_lock(&a->lock);
	bool s = a->stop;
	pthread_mutex_unlock(&a->lock);
	return s;
}

static void conn_drop(Amqp *a, Conn *c, bool graceful)
{
	if (!c->conn)
		return;
	if (graceful)
		amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
	set_busy_fd(a, NULL);
	amqp_destroy_connection(c->conn);
	c->conn = NULL;
	c->channel_open = false;
}

/* Text for a failed RPC reply, never containing credentials. */
static int reply_error(const amqp_rpc_reply_t *rep, const char *what, char **ret_error)
{
	char buf[256];
	int r = -EIO;

	switch (rep->reply_type) {
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		if (rep->library_error == AMQP_STATUS_TIMEOUT ||
		    rep->library_error == AMQP_STATUS_HEARTBEAT_TIMEOUT)
			r = -ETIMEDOUT;
		snprintf(buf, sizeof buf, "AMQP %s: %s", what, amqp_error_string2(rep->library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (rep->reply.id == AMQP_CONNECTION_CLOSE_METHOD ||
		    rep->reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			/* Both close methods share the layout reply_code, reply_text. */
			amqp_connection_close_t *m = rep->reply.decoded;
			int len = (int)MIN(m->reply_text.len, (size_t)160);
			snprintf(buf, sizeof buf, "AMQP %s: broker closed the %s: %d %.*s", what,
				 rep->reply.id == AMQP_CONNECTION_CLOSE_METHOD ? "connection" : "channel",
				 m->reply_code, len, (const char *)m->reply_text.bytes);
			if (m->reply_code == 403)
				r = -EACCES;
		} else
			snprintf(buf, sizeof buf, "AMQP %s: unexpected method 0x%08x", what,
				 rep->reply.id);
		break;
	case AMQP_RESPONSE_NONE:
	default:
		snprintf(buf, sizeof buf, "AMQP %s: no reply", what);
		break;
	}
	/* Sanitise: printable ASCII only. */
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = ' ';
	*ret_error = strdup(buf);
	return r;
}

static int conn_open(Amqp *a, Conn *c, char **ret_error)
{
	char buf[256];
	amqp_socket_t *sock;
	int k;

	c->conn = amqp_new_connection();
	if (!c->conn)
		return -ENOMEM;
	if (a->ssl) {
		sock = amqp_ssl_socket_new(c->conn);
		if (sock) {
			amqp_ssl_socket_set_verify_peer(sock, a->verify);
			amqp_ssl_socket_set_verify_hostname(sock, a->verify);
			if (a->ca_file && amqp_ssl_socket_set_cacert(sock, a->ca_file) != AMQP_STATUS_OK) {
				conn_drop(a, c, false);
				*ret_error = strdup("AMQP: cannot load the TLS CA file");
				return -EIO;
			}
		}
	} else
		sock = amqp_tcp_socket_new(c->conn);
	if (!sock) {
		conn_drop(a, c, false);
		return -ENOMEM;
	}
	struct timeval tv = a->timeout;
	k = amqp_socket_open_noblock(sock, a->host, a->port, &tv);
	if (k != AMQP_STATUS_OK) {
		snprintf(buf, sizeof buf, "AMQP connect to %s:%d: %s", a->host, a->port,
			 amqp_error_string2(k));
		conn_drop(a, c, false);
		*ret_error = strdup(buf);
		return k == AMQP_STATUS_TIMEOUT ? -ETIMEDOUT
										    : -ECONNREFUSED;
	}
	set_busy_fd(a, c->conn);
	tv = a->timeout;
	amqp_set_handshake_timeout(c->conn, &tv);
	tv = a->timeout;
	amqp_set_rpc_timeout(c->conn, &tv);

	amqp_rpc_reply_t rep = amqp_login(c->conn, c->vhost, 0, AMQP_DEFAULT_FRAME_SIZE,
					  AMQP_HEARTBEAT, AMQP_SASL_METHOD_PLAIN, a->user,
					  a->password ? a->password : "");
	if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
		snprintf(buf, sizeof buf, "login as %s to vhost %s", a->user, c->vhost);
		k = reply_error(&rep, buf, ret_error);
		conn_drop(a, c, false);
		return k;
	}
	return 0;
}

static int channel_open(Amqp *a, Conn *c, char **ret_error)
{
	amqp_channel_open(c->conn, AMQP_CHANNEL);
	amqp_rpc_reply_t rep = amqp_get_rpc_reply(c->conn);
	if (rep.reply_type != AMQP_RESPONSE_NORMAL) {
		int k = reply_error(&rep, "channel.open", ret_error);
		conn_drop(a, c, false);
		return k;
	}
	c->channel_open = true;
	return 0;
}

/* One attempt over all queues. Returns 0, or -errno with *ret_error (connection dropped). */
static int declare_all(Amqp *a, Conn *c, Job *j, QueueDepth *q)
{
	int k;

	for (size_t i = 0; i < j->n; i++) {
		if (stopping(a))
			return -ECANCELED;
		if (!c->channel_open) {
			k = channel_open(a, c, &j->error);
			if (k < 0)
				return k;
		}
		size_t len = strlen(j->queues[i]);
		if (len > 255) { /* not a valid AMQP queue name: it cannot exist */
			q[i].valid = false;
			q[i].why = "absent";
			continue;
		}
		amqp_queue_declare_ok_t *ok = amqp_queue_declare(
			c->conn, AMQP_CHANNEL, amqp_cstring_bytes(j->queues[i]), 1, 0, 0, 0,
			amqp_empty_table);
		amqp_rpc_reply_t rep = amqp_get_rpc_reply(c->conn);
		if (ok && rep.reply_type == AMQP_RESPONSE_NORMAL) {
			q[i].valid = true;
			q[i].why = NULL;
			q[i].ready = ok->message_count;
			q[i].unacked = 0;
			amqp_maybe_release_buffers(c->conn);
			continue;
		}
		if (rep.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
		    rep.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			amqp_channel_close_t *m = rep.reply.decoded;
			int code = m->reply_code;
			/* The broker closed the channel: acknowledge, then reopen for the rest. */
			amqp_channel_close_ok_t close_ok = {0};
			c->channel_open = false;
			if (amqp_send_method(c->conn, AMQP_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD,
					     &close_ok) != AMQP_STATUS_OK) {
				j->error = strdup("AMQP: cannot acknowledge channel.close");
				conn_drop(a, c, false);
				return -EIO;
			}
			if (code == 404) {
				q[i].valid = false;
				q[i].why = "absent";
				amqp_maybe_release_buffers(c->conn);
				continue;
			}
			k = reply_error(&rep, "queue.declare", &j->error);
			amqp_maybe_release_buffers(c->conn);
			return k;
		}
		k = reply_error(&rep, "queue.declare", &j->error);
		conn_drop(a, c, false);
		return k;
	}
	return 0;
}

static void run_job(Amqp *a, Job *j)
{
	Conn *c = NULL;

	for (size_t i = 0; i < a->n_conns; i++)
		if (streq(a->conns[i].vhost, j->vhost))
			c = &a->conns[i];
	if (!c) {
		Conn *v = realloc(a->conns, (a->n_conns + 1) * sizeof(Conn));
		if (!v) {
			j->r = -ENOMEM;
			return;
		}
		a->conns = v;
		c = &v[a->n_conns];
		*c = (Conn){.vhost = strdup(j->vhost)};
		if (!c->vhost) {
			j->r = -ENOMEM;
			return;
		}
		a->n_conns++;
	}

	QueueDepth *q = calloc(MAX(j->n, (size_t)1), sizeof(QueueDepth));
	if (!q) {
		j->r = -ENOMEM;
		return;
	}
	for (size_t i = 0; i < j->n; i++)
		if (!(q[i].name = strdup(j->queues[i]))) {
			queue_depths_free(q, j->n);
			j->r = -ENOMEM;
			return;
		}

	/* A reused connection may have died while idle (heartbeat missed, broker restart): in that
	 * case reconnect once and retry within the same job. */
	for (int attempt = 0; attempt < 2; attempt++) {
		bool reused = c->conn != NULL;
		int k = 0;
		free(j->error);
		j->error = NULL;
		if (!c->conn)
			k = conn_open(a, c, &j->error);
		if (k >= 0)
			k = declare_all(a, c, j, q);
		set_busy_fd(a, NULL);
		j->r = k;
		if (k >= 0 || !reused || c->conn || k == -ECANCELED)
			break;
	}
	if (j->r >= 0)
		j->depths = q;
	else
		queue_depths_free(q, j->n);
}

static void *worker(void *userdata)
{
	Amqp *a = userdata;

	for (;;) {
		pthread_mutex_lock(&a->lock);
		while (!a->stop && !a->pending)
			pthread_cond_wait(&a->cond, &a->lock);
		if (a->stop) {
			pthread_mutex_unlock(&a->lock);
			break;
		}
		Job *j = a->pending;
		a->pending = j->next;
		j->next = NULL;
		pthread_mutex_unlock(&a->lock);

		run_job(a, j);

		pthread_mutex_lock(&a->lock);
		if (a->stop) {
			pthread_mutex_unlock(&a->lock);
			job_free(j);
			break;
		}
		job_append(&a->done, j);
		pthread_mutex_unlock(&a->lock);
		ssize_t w;
		do
			w = write(a->pipe[1], "x", 1);
		while (w < 0 && errno == EINTR);
		/* EAGAIN: the pipe is full of wake-ups already; the loop will drain the list. */
	}

	for (size_t i = 0; i < a->n_conns; i++) {
		conn_drop(a, &a->conns[i], true);
		free(a->conns[i].vhost);
	}
	free(a->conns);
	a->conns = NULL;
	a->n_conns = 0;
	return NULL;
}

/* ---- loop side ---- */

static void amqp_destroy(Amqp *a)
{
	if (a->thread_started) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		/* Unblock a worker stuck in a socket call so that the join is quick. */
		if (a->busy_fd >= 0)
			shutdown(a->busy_fd, SHUT_RDWR);
		pthread_cond_signal(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	jobs_free(a->pending);
	jobs_free(a->done);
	sd_event_source_disable_unref(a->io);
	sd_event_unref(a->event);
	if (a->pipe[0] >= 0)
		close(a->pipe[0]);
	if (a->pipe[1] >= 0)
		close(a->pipe[1]);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->cond);
	free(a->host);
	free(a->user);
	secret_free(a->password);
	free(a->ca_file);
	free(a);
}

static int on_pipe(sd_event_source *s _unused_, int fd, uint32_t revents _unused_, void *userdata)
{
	Amqp *a = userdata;
	char buf[64];

	while (read(fd, buf, sizeof buf) > 0)
		;
	a->in_dispatch = true;
	for (;;) {
		pthread_mutex_lock(&a->lock);
		Job *j = a->done;
		if (j)
			a->done = j->next;
		pthread_mutex_unlock(&a->lock);
		if (!j)
			break;
		if (j->r < 0)
			j->cb(j->r, j->error ? j->error : strerror(-j->r), NULL, 0, j->userdata);
		else
			j->cb(0, NULL, j->depths, j->n, j->userdata);
		job_free(j);
		if (a->free_requested)
			break;
	}
	a->in_dispatch = false;
	if (a->free_requested)
		amqp_destroy(a);
	return 0;
}

Amqp *amqp_source_free(Amqp *a)
{
	if (!a)
		return NULL;
	if (a->in_dispatch) /* called from one of our callbacks: finish after it returns */
		a->free_requested = true;
	else
		amqp_destroy(a);
	return NULL;
}

/* True if URL has "user[:password]@" in its authority. */
static bool url_has_userinfo(const char *url)
{
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	size_t end = strcspn(p, "/?#");
	const char *at = memchr(p, '@', end);
	return at != NULL;
}

int amqp_source_new(sd_event *e, const Config *c, Amqp **ret)
{
	if (!e || !c || !c->amqp_url || !ret)
		return -EINVAL;

	Amqp *a = calloc(1, sizeof(Amqp));
	if (!a)
		return -ENOMEM;
	a->pipe[0] = a->pipe[1] = -1;
	a->busy_fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	a->event = sd_event_ref(e);

	/* amqp_parse_url() writes into its argument and points the result into it. */
	char *copy = strdup(c->amqp_url);
	struct amqp_connection_info info;
	int k = -ENOMEM;
	if (!copy)
		goto fail;
	amqp_default_connection_info(&info);
	if (amqp_parse_url(copy, &info) != AMQP_STATUS_OK) {
		k = -EINVAL;
		goto fail_copy;
	}
	bool from_url = url_has_userinfo(c->amqp_url);
	a->host = strdup(info.host);
	a->port = info.port;
	a->ssl = info.ssl;
	a->user = strdup(from_url ? info.user : (c->rmq_user ? c->rmq_user : info.user));
	a->password = from_url ? strdup(info.password)
			       : c->rmq_password ? strdup(c->rmq_password) : strdup(info.password);
	explicit_bzero(copy, strlen(c->amqp_url));
	free(copy);
	copy = NULL;
	a->ca_file = c->tls_ca_file ? strdup(c->tls_ca_file) : NULL;
	a->verify = c->tls_verify;
	double t = c->rmq_timeout > 0 ? c->rmq_timeout : 3.0;
	a->timeout.tv_sec = (time_t)t;
	a->timeout.tv_usec = (suseconds_t)((t - (double)(time_t)t) * 1e6);
	if (!a->host || !a->user || !a->password || (c->tls_ca_file && !a->ca_file))
		goto fail;

	if (pipe2(a->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		k = -errno;
		goto fail;
	}
	k = sd_event_add_io(e, &a->io, a->pipe[0], EPOLLIN, on_pipe, a);
	if (k < 0)
		goto fail;
	(void)sd_event_source_set_description(a->io, "amqp-source");

	k = -pthread_create(&a->thread, NULL, worker, a);
	if (k < 0)
		goto fail;
	a->thread_started = true;
	*ret = a;
	return 0;

fail_copy:
	explicit_bzero(copy, strlen(copy));
	free(copy);
fail:
	amqp_destroy(a);
	return k;
}

int amqp_source_query(Amqp *a, const char *vhost, char *const *queues, size_t n,
		      RabbitCallback cb, void *userdata)
{
	if (!a || !vhost || !queues || n == 0 || !cb)
		return -EINVAL;
	Job *j = calloc(1, sizeof(Job));
	if (!j)
		return -ENOMEM;
	j->cb = cb;
	j->userdata = userdata;
	j->vhost = strdup(vhost);
	j->queues = calloc(n, sizeof(char *));
	j->n = n;
	if (!j->vhost || !j->queues) {
		job_free(j);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		if (!(j->queues[i] = strdup(queues[i]))) {
			job_free(j);
			return -ENOMEM;
		}
	pthread_mutex_lock(&a->lock);
	job_append(&a->pending, j);
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return 0;
}
