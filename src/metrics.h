/* SPDX-License-Identifier: MIT */
/* Prometheus endpoint: a minimal HTTP/1.0 server on the sd-event loop that answers
 * GET /metrics with the latest text the manager handed over (status_render_prometheus()).
 * Non-blocking; each connection is read, answered and closed, with a size and time bound. */
#pragma once

#include <systemd/sd-event.h>

typedef struct Metrics Metrics;

/* LISTEN is "HOST:PORT" (IPv4, or [IPv6]:PORT). Returns 0, or -errno with *ret_error set. */
int metrics_new(sd_event *e, const char *listen, Metrics **ret, char **ret_error);
Metrics *metrics_free(Metrics *m);
/* Replace the text served (copied). */
int metrics_update(Metrics *m, const char *text);
