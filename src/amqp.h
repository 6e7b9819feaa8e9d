/* SPDX-License-Identifier: MIT */
/* AMQP source (source = "amqp"): queue depth by passive queue.declare over librabbitmq. That
 * counts ready messages only (no unacked) but has no statistics lag. librabbitmq is blocking,
 * so the connection lives on one worker thread; requests and results cross over a pipe watched
 * by the event loop, so the loop never blocks. One long-lived connection per vhost; a channel
 * closed by a 404 is reopened, a broken connection is reconnected on the next query. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "rabbitmq.h"

typedef struct Amqp Amqp;

/* Uses c->amqp_url, rmq_user, rmq_password (unless the URL carries credentials), rmq_timeout. */
int amqp_source_new(sd_event *e, const Config *c, Amqp **ret);
Amqp *amqp_source_free(Amqp *a); /* joins the thread */

/* Same result shape as rabbit_query (unacked is always 0). */
int amqp_source_query(Amqp *a, const char *vhost, char *const *queues, size_t n,
		      RabbitCallback cb, void *userdata);
