/* SPDX-License-Identifier: MIT */
/* Docker Engine API client over the Unix socket, asynchronous (on Http). The API version is
 * negotiated from GET /_ping (Api-Version header): min(server, DOCKER_API_MAX), refusing
 * servers below DOCKER_API_MIN. Parsers and the create-body builder are pure functions. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http.h"

#define DOCKER_API_MIN "1.41"
#define DOCKER_API_MAX "1.47"

#define LABEL_POOL "io.sluice.pool"
#define LABEL_MANAGED "io.sluice.managed"
#define LABEL_SPEC "io.sluice.spec"

typedef struct {
	char *id;
	char *name;  /* without the leading '/' */
	char *pool;  /* io.sluice.pool label or NULL */
	char *spec;  /* io.sluice.spec label or NULL */
	bool managed; /* io.sluice.managed == "true" */
	char *state; /* Docker's State: created, running, paused, restarting, removing, exited, dead */
	int64_t created; /* Unix seconds */
	int exit_code;   /* from "Exited (N) ..." or inspect; -1 unknown */
	double started_at;  /* Unix seconds (inspect only; 0 unknown) */
	double finished_at; /* Unix seconds (inspect only; 0 unknown) */
} DockerContainer;

void docker_container_clear(DockerContainer *c);
void docker_containers_free(DockerContainer *c, size_t n);

typedef struct Docker Docker;

int docker_new(Http *h, const char *socket_path, Docker **ret);
Docker *docker_free(Docker *d);

/* The negotiated version ("1.41"), or NULL before a successful ping. */
const char *docker_api_version(const Docker *d);

/* Every callback gets r = 0 on success or -errno, and ERROR, a one-line description for the
 * log (NULL on success). 404 -> -ENOENT, 409 -> -EEXIST (create: name in use), 304 on
 * start/stop -> 0 (already in that state), others -> -EIO with Docker's "message". */
typedef void (*DockerCallback)(int r, const char *error, void *userdata);
typedef void (*DockerListCallback)(int r, const char *error, DockerContainer *list, size_t n,
				   void *userdata); /* LIST is borrowed: valid during the call */
typedef void (*DockerCreateCallback)(int r, const char *error, const char *id, void *userdata);
typedef void (*DockerInspectCallback)(int r, const char *error, const DockerContainer *c,
				      void *userdata);

/* GET /_ping and negotiate the version. Done automatically before the first other request
 * and again after a connection failure; callers may also call it explicitly. */
int docker_ping(Docker *d, DockerCallback cb, void *userdata);

/* GET /containers/json?all=1 filtered on io.sluice.managed=true. */
int docker_list(Docker *d, DockerListCallback cb, void *userdata);

/* POST /containers/create?name=NAME with docker_create_body(). */
int docker_create(Docker *d, const PoolConfig *p, const char *name, unsigned index,
		  DockerCreateCallback cb, void *userdata);
int docker_start(Docker *d, const char *id, DockerCallback cb, void *userdata);
/* POST /containers/{id}/stop?t=T (and &signal= from API 1.42). HTTP timeout is T + 30 s. */
int docker_stop(Docker *d, const char *id, const char *signal, double timeout, DockerCallback cb,
		void *userdata);
int docker_rename(Docker *d, const char *id, const char *new_name, DockerCallback cb,
		  void *userdata);
/* DELETE /containers/{id}?v=1 (no force: only exited containers are removed). */
int docker_remove(Docker *d, const char *id, DockerCallback cb, void *userdata);
int docker_inspect(Docker *d, const char *id, DockerInspectCallback cb, void *userdata);

/* Pure helpers. */
int docker_parse_list(const char *json, size_t len, DockerContainer **ret, size_t *ret_n);
int docker_parse_inspect(const char *json, size_t len, DockerContainer *ret);
/* The JSON body for POST /containers/create: image, Cmd and Env with {name}/{pool}/{index}
 * substituted, labels (user labels + io.sluice.*), StopSignal, StopTimeout, HostConfig
 * (NetworkMode, Memory, NanoCpus, Binds, Init, RestartPolicy "no"), User. */
char *docker_create_body(const PoolConfig *p, const char *name, unsigned index);
/* Replace {name}, {pool} and {index} in S. */
char *docker_substitute(const char *s, const char *name, const char *pool, unsigned index);
/* Compare two "1.41"-style versions: <0, 0, >0. */
int docker_version_cmp(const char *a, const char *b);
