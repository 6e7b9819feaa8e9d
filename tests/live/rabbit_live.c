/* SPDX-License-Identifier: MIT */
/* Live check against a running RabbitMQ (not part of make check). Build from the top dir:
 *   gcc -std=gnu11 -pthread -Isrc tests/live/rabbit_live.c src/libsluice.a \
 *       $(pkg-config --libs libcurl librabbitmq libsystemd jansson libconfig) -lm -o /tmp/rabbit_live
 * Run: rabbit_live MGMT_URL AMQP_URL USER PASSWORD VHOST QUEUE...
 * Queries the queues once through the management source (one request) and once through the
 * AMQP source, both on sd-event, and prints results and timings. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "amqp.h"
#include "http.h"
#include "rabbitmq.h"

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
	sd_event *e;
	const char *what;
	double t0;
	int pending;
} Ctx;

static void done(int r, const char *error, const QueueDepth *q, size_t n, void *userdata)
{
	Ctx *c = userdata;
	printf("%s: %.1f ms r=%d%s%s\n", c->what, (now_mono() - c->t0) * 1e3, r, error ? " " : "",
	       error ? error : "");
	for (size_t i = 0; i < n; i++)
		printf("  %-20s valid=%d ready=%lld unacked=%lld%s%s\n", q[i].name, q[i].valid,
		       (long long)q[i].ready, (long long)q[i].unacked, q[i].why ? " why=" : "",
		       q[i].why ? q[i].why : "");
	c->pending--;
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: %s MGMT_URL AMQP_URL USER PASSWORD VHOST QUEUE...\n", argv[0]);
		return 2;
	}
	Config cfg = {
		.rmq_url = argv[1],
		.amqp_url = argv[2],
		.rmq_user = argv[3],
		.rmq_password = argv[4],
		.rmq_timeout = 3.0,
		.tls_verify = true,
	};
	const char *vhost = argv[5];
	char **queues = argv + 6;
	size_t n = (size_t)(argc - 6);
	sd_event *e = NULL;
	Http *h = NULL;
	Rabbit *rb = NULL;
	Amqp *a = NULL;
	int r;

	if ((r = sd_event_new(&e)) < 0 || (r = http_new(e, &h)) < 0 || (r = rabbit_new(h, &cfg, &rb)) < 0 ||
	    (r = amqp_source_new(e, &cfg, &a)) < 0) {
		fprintf(stderr, "setup: %s\n", strerror(-r));
		return 1;
	}
	/* Round 1 (both sources), round 2 (warm AMQP connection, same Rabbit: first-seen state). */
	for (int round = 1; round <= 2; round++) {
		char w1[64], w2[64];
		/* SLUICE_LIVE_PAUSE=S: sleep between rounds (e.g. to close connections on the broker
		 * and watch the AMQP source reconnect). A test tool, not the daemon: sleep is fine. */
		if (round == 2 && getenv("SLUICE_LIVE_PAUSE"))
			sleep((unsigned)atoi(getenv("SLUICE_LIVE_PAUSE")));
		snprintf(w1, sizeof w1, "management round %d", round);
		snprintf(w2, sizeof w2, "amqp round %d", round);
		Ctx cm = {.e = e, .what = w1, .pending = 1}, ca = {.e = e, .what = w2, .pending = 1};
		uint64_t before = http_requests_total(h);
		cm.t0 = now_mono();
		r = rabbit_query(rb, vhost, queues, n, cm.t0, done, &cm);
		if (r < 0)
			fprintf(stderr, "rabbit_query: %s\n", strerror(-r));
		else
			while (cm.pending > 0)
				sd_event_run(e, UINT64_MAX);
		printf("  (%llu HTTP request(s))\n",
		       (unsigned long long)(http_requests_total(h) - before));
		ca.t0 = now_mono();
		r = amqp_source_query(a, vhost, queues, n, done, &ca);
		if (r < 0)
			fprintf(stderr, "amqp_source_query: %s\n", strerror(-r));
		else
			while (ca.pending > 0)
				sd_event_run(e, UINT64_MAX);
	}
	amqp_source_free(a);
	rabbit_free(rb);
	http_free(h);
	sd_event_unref(e);
	return 0;
}
