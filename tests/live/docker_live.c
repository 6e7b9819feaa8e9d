/* SPDX-License-Identifier: MIT */
/* Live check of Http + Docker against a real (private) dockerd. Not part of `make check`.
 *
 *   gcc -Isrc -o docker_live tests/live/docker_live.c src/docker.c src/http.c \
 *       $(pkg-config --cflags --libs libcurl libsystemd jansson) -lm
 *   ./docker_live /tmp/sluice-docker.XXXX/docker.sock busybox:local
 *
 * Steps (each waits for the previous one; every step is asynchronous on one sd-event loop):
 * ping -> create 2 (sleep, one ignores SIGTERM) -> start both -> list -> rename one ->
 * stop both with t=2 at once (a 100 ms timer must keep ticking meanwhile) -> inspect
 * (exit codes: 143 via SIGTERM, 137 via SIGKILL after the grace) -> remove -> list again. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "docker.h"
#include "http.h"

static sd_event *ev;
static Docker *dk;
static double t0;
static int failures;
static int pending;
static int ticks, ticks_during_stop, max_tick_gap_ms;
static double last_tick;
static bool stopping;
static char ids[2][80];
static const char *image;
static void step(int n);
static int cur_step;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#define say(...)                                                                                   \
	do {                                                                                       \
		printf("[%7.3f] ", now() - t0);                                                    \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
		fflush(stdout);                                                                    \
	} while (0)

static void check(int r, const char *error, const char *what)
{
	if (r < 0) {
		failures++;
		say("FAIL %s: %s (%s)", what, error ? error : "?", strerror(-r));
	}
}

static void done_one(void)
{
	if (--pending == 0)
		step(cur_step + 1);
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata)
{
	double t = now();

	if (last_tick > 0 && (int)((t - last_tick) * 1000) > max_tick_gap_ms && stopping)
		max_tick_gap_ms = (int)((t - last_tick) * 1000);
	last_tick = t;
	ticks++;
	if (stopping)
		ticks_during_stop++;
	sd_event_source_set_time(s, usec + 100 * 1000);
	return 0;
}

static void on_ping(int r, const char *error, void *u)
{
	check(r, error, "ping");
	say("ping: negotiated API %s (max %s, min %s)", docker_api_version(dk) ?: "-",
	    DOCKER_API_MAX, DOCKER_API_MIN);
	done_one();
}

static void on_create(int r, const char *error, const char *id, void *u)
{
	int i = (int)(intptr_t)u;

	check(r, error, "create");
	if (id)
		snprintf(ids[i], sizeof(ids[i]), "%s", id);
	say("create live-%d: %.12s", i, id ? id : "-");
	done_one();
}

static void on_simple(int r, const char *error, void *u)
{
	check(r, error, (const char *)u);
	say("%s: %s", (const char *)u, r < 0 ? "failed" : "ok");
	done_one();
}

static double stop_started;
static void on_stop(int r, const char *error, void *u)
{
	check(r, error, "stop");
	say("stop live-%d: done after %.3f s", (int)(intptr_t)u, now() - stop_started);
	done_one();
}

static void on_list(int r, const char *error, DockerContainer *list, size_t n, void *u)
{
	check(r, error, "list");
	say("list: %zu managed container(s)", n);
	for (size_t i = 0; i < n; i++)
		say("  %.12s %-16s pool=%s spec=%s state=%s exit=%d", list[i].id, list[i].name,
		    list[i].pool ?: "-", list[i].spec ?: "-", list[i].state, list[i].exit_code);
	done_one();
}

static void on_inspect(int r, const char *error, const DockerContainer *c, void *u)
{
	int i = (int)(intptr_t)u;

	check(r, error, "inspect");
	if (c) {
		say("inspect live-%d: name=%s state=%s exit=%d ran %.3f s", i, c->name, c->state,
		    c->exit_code, c->finished_at - c->started_at);
		/* live-0 exits on SIGTERM (143 via init); live-1 ignores it: SIGKILL (137). */
		if (c->exit_code != (i == 0 ? 143 : 137)) {
			failures++;
			say("FAIL unexpected exit code");
		}
	}
	done_one();
}

static char *argv_sleep[] = { "sleep", "1000", NULL };
static char *argv_trap[] = { "sh", "-c", "trap '' TERM; sleep 1000", NULL };
static char *env_v[] = { "WORKER={name}", "POOL={pool}", "INDEX={index}", NULL };

static void step(int n)
{
	PoolConfig p = {
		.name = "live",
		.stop_signal = "SIGTERM",
		.stop_timeout = 2,
		.container = { .image = (char *)image, .env = env_v, .n_env = 3,
			       .network = "none", .init = true, .memory = 64 << 20, .cpus = 0.5 },
	};
	int r = 0;

	strcpy(p.spec_hash, "1111222233334444");
	cur_step = n;
	switch (n) {
	case 0:
		pending = 1;
		r = docker_ping(dk, on_ping, NULL);
		break;
	case 1:
		pending = 2;
		for (int i = 0; i < 2 && r >= 0; i++) {
			char name[32];

			p.container.command = i == 0 ? argv_sleep : argv_trap;
			p.container.n_command = i == 0 ? 2 : 3;
			snprintf(name, sizeof(name), "live-%d", i);
			r = docker_create(dk, &p, name, (unsigned)i, on_create, (void *)(intptr_t)i);
		}
		break;
	case 2:
		pending = 2;
		r = docker_start(dk, ids[0], on_simple, "start live-0");
		if (r >= 0)
			r = docker_start(dk, ids[1], on_simple, "start live-1");
		break;
	case 3:
		pending = 1;
		r = docker_list(dk, on_list, NULL);
		break;
	case 4:
		pending = 1;
		r = docker_rename(dk, ids[1], "live-1-renamed", on_simple, "rename live-1");
		break;
	case 5:
		pending = 2;
		stopping = true;
		stop_started = now();
		say("stopping both with t=2 (HTTP requests in flight: both at once)");
		r = docker_stop(dk, ids[0], NULL, 2, on_stop, (void *)(intptr_t)0);
		if (r >= 0)
			r = docker_stop(dk, ids[1], NULL, 2, on_stop, (void *)(intptr_t)1);
		break;
	case 6:
		stopping = false;
		say("during the stops: %d ticks of the 100 ms timer, largest gap %d ms",
		    ticks_during_stop, max_tick_gap_ms);
		if (ticks_during_stop < 15 || max_tick_gap_ms > 300) {
			failures++;
			say("FAIL loop was not responsive during stop");
		}
		pending = 2;
		r = docker_inspect(dk, ids[0], on_inspect, (void *)(intptr_t)0);
		if (r >= 0)
			r = docker_inspect(dk, ids[1], on_inspect, (void *)(intptr_t)1);
		break;
	case 7:
		pending = 2;
		r = docker_remove(dk, ids[0], on_simple, "remove live-0");
		if (r >= 0)
			r = docker_remove(dk, ids[1], on_simple, "remove live-1");
		break;
	case 8:
		pending = 1;
		r = docker_list(dk, on_list, NULL);
		break;
	default:
		sd_event_exit(ev, 0);
		return;
	}
	if (r < 0) {
		say("FAIL submitting step %d: %s", n, strerror(-r));
		failures++;
		sd_event_exit(ev, 1);
	}
}

int main(int argc, char **argv)
{
	sd_event_source *tick;
	Http *h;
	uint64_t usec;

	if (argc != 3) {
		fprintf(stderr, "usage: %s DOCKER_SOCKET IMAGE\n", argv[0]);
		return 2;
	}
	image = argv[2];
	t0 = now();
	if (sd_event_default(&ev) < 0 || http_new(ev, &h) < 0 || docker_new(h, argv[1], &dk) < 0)
		return 1;
	sd_event_now(ev, CLOCK_MONOTONIC, &usec);
	sd_event_add_time(ev, &tick, CLOCK_MONOTONIC, usec + 100 * 1000, 1000, on_tick, NULL);
	sd_event_source_set_enabled(tick, SD_EVENT_ON);

	step(0);
	sd_event_loop(ev);

	say("total: %.3f s, %llu HTTP requests, %d failure(s)", now() - t0,
	    (unsigned long long)http_requests_total(h), failures);
	sd_event_source_unref(tick);
	docker_free(dk);
	http_free(h);
	sd_event_unref(ev);
	return failures ? 1 : 0;
}
