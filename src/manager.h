/* SPDX-License-Identifier: MIT */
/* The manager: the one sd-event loop of sluiced. It owns the configuration, the clients (HTTP,
 * Docker, RabbitMQ management, AMQP), the per-pool runtime state, the tick timer, signals
 * (SIGTERM/SIGINT stop, SIGHUP reloads) and sd_notify. Each tick: read every pool's depth
 * (one request per source and vhost) and list the managed containers (one request), then per
 * pool: observe -> policy -> plan -> actions, then status file, STATUS=, metrics. */
#pragma once

#include <stdbool.h>

#include "config.h"

typedef struct {
	const char *config_path;
	bool dry_run; /* decide and log, change nothing */
	bool once;    /* one reconcile pass, wait for its operations, exit */
} ManagerOptions;

typedef struct Manager Manager;

/* Takes ownership of CONFIG. Returns 0 or -errno (with a message logged). */
int manager_new(const ManagerOptions *o, Config *config, Manager **ret);
Manager *manager_free(Manager *m);

/* Run the loop until SIGTERM/SIGINT (or, with once, until the pass is done). Returns 0 or
 * -errno. Workers are never touched on the way out. */
int manager_run(Manager *m);
