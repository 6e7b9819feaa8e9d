/* SPDX-License-Identifier: MIT */
/* RabbitMQ management API source: queue depths over HTTP (on Http). One request per vhost
 * per tick (GET /api/queues/{vhost}?columns=...&name=^(q1|q2)$&use_regex=true, paginated),
 * shared by every pool on that vhost. Parsing is a pure function. A queue that is absent, in
 * state "down", lacks its counters, or reads zero before the broker collected its statistics
 * is reported as not valid: unknown is never zero. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"

typedef struct {
	char *name;
	bool valid;    /* counters present and plausible and statistics collected */
	int64_t ready; /* messages_ready */
	int64_t unacked; /* messages_unacknowledged */
	const char *why; /* when !valid: "absent", "down", "no statistics yet", "implausible" */
} QueueDepth;

void queue_depths_free(QueueDepth *q, size_t n);

typedef struct Rabbit Rabbit;

/* Uses c->rmq_url, rmq_user, rmq_password, rmq_timeout, tls_ca_file, tls_verify (copied). */
int rabbit_new(Http *h, const Config *c, Rabbit **ret);
Rabbit *rabbit_free(Rabbit *r);

/* Result for QUEUES, in the same order. r < 0 (with ERROR, no secrets) when the whole request
 * failed: HTTP error, timeout, bad JSON. */
typedef void (*RabbitCallback)(int r, const char *error, const QueueDepth *q, size_t n,
			       void *userdata);

/* Read the depths of QUEUES in VHOST. NOW (monotonic seconds) is used to tell a queue whose
 * statistics are not collected yet (first seen recently and reading zero) from an empty one. */
int rabbit_query(Rabbit *r, const char *vhost, char *const *queues, size_t n, double now,
		 RabbitCallback cb, void *userdata);

/* Pure: parse a /api/queues listing (a JSON array, or a paginated object with "items") into
 * entries for QUEUES (same order; absent ones !valid "absent"). *ret_pages = page_count (1 if
 * not paginated). */
int rabbit_parse_queues(const char *json, size_t len, char *const *queues, size_t n,
			QueueDepth **ret, int *ret_pages);
