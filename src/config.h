/* SPDX-License-Identifier: MIT */
/* Configuration: /etc/sluice/sluice.conf (libconfig syntax, @include allowed), parsed and
 * validated into sluice's own structures; the config_t is destroyed before config_load()
 * returns, so nothing here points into libconfig. The schema is shared/SPEC.md
 * "Configuration"; defaults and ranges are documented in docs/sluice.conf.5. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLUICE_DEFAULT_CONFIG SYSCONFDIR "/sluice/sluice.conf"

typedef enum {
	COUNT_READY_UNACKED, /* "ready+unacked" (default) */
	COUNT_READY,         /* "ready" */
} CountMode;

typedef enum {
	SOURCE_MANAGEMENT, /* "management" (default): HTTP management API */
	SOURCE_AMQP,       /* "amqp": passive queue.declare, ready only */
} SourceKind;

typedef enum {
	ON_ERROR_HOLD,     /* on_error = "hold" (default) */
	ON_ERROR_FALLBACK, /* fallback = N given */
} OnError;

typedef struct {
	double stabilization; /* seconds */
	int max_step;         /* workers per period, >= 1 */
	double period;        /* seconds, > 0 */
} ScaleRule;

typedef struct {
	char *image;
	char **command; /* NULL-terminated; may be NULL = image default */
	size_t n_command;
	char **env; /* "K=V", NULL-terminated; may be NULL */
	size_t n_env;
	char *network;  /* NULL = Docker default */
	int64_t memory; /* bytes; 0 = unlimited */
	double cpus;    /* 0 = unlimited */
	char **volumes; /* "src:dst[:opts]", NULL-terminated; may be NULL */
	size_t n_volumes;
	char **label_keys; /* user labels (never io.sluice.*) */
	char **label_values;
	size_t n_labels;
	char *user; /* NULL = image default */
	bool init;
} ContainerSpec;

typedef struct {
	char *name; /* [a-zA-Z0-9][a-zA-Z0-9_.-]*, unique */
	char *vhost;
	char **queues;
	size_t n_queues;
	CountMode count;
	SourceKind source;
	double target;     /* messages per worker, > 0 */
	double activation; /* >= 0 */
	int min, max;      /* 0 <= min <= max, max >= 1 */
	double cooldown;   /* seconds */
	ScaleRule up, down;
	OnError on_error;
	int fallback;          /* with ON_ERROR_FALLBACK, in [min, max] */
	int failure_threshold; /* consecutive failures before fallback, >= 1 */
	char *stop_signal;     /* "SIGTERM", ... */
	double stop_timeout;   /* grace in seconds */
	ContainerSpec container;
	char spec_hash[17]; /* 16 hex digits over the container spec + stop settings */
	char *file;         /* where the pool was defined, for messages */
	int line;
} PoolConfig;

typedef struct {
	char *path;      /* the file that was loaded */
	double interval; /* seconds between polls */
	char *docker_socket;
	char *rmq_url; /* management API base URL, no trailing slash */
	char *rmq_user;
	char *rmq_password; /* resolved secret (inline, password_file or credential); never logged */
	char *amqp_url;
	double rmq_timeout;
	char *tls_ca_file; /* NULL = system default */
	bool tls_verify;
	char *metrics_listen; /* "HOST:PORT" or NULL = off */
	PoolConfig *pools;
	size_t n_pools;
} Config;

/* Load and validate PATH. On success stores a new Config in *ret and returns 0. On failure
 * returns -EINVAL (bad content), -EACCES (an inline password in a world-readable file) or
 * another -errno, and stores a message "FILE:LINE: what is wrong, what is allowed" in
 * *ret_error (caller frees). */
int config_load(const char *path, Config **ret, char **ret_error);

Config *config_free(Config *c);

/* Find a pool by name, or NULL. */
const PoolConfig *config_find_pool(const Config *c, const char *name);

const char *count_mode_to_string(CountMode m);
const char *source_kind_to_string(SourceKind s);
