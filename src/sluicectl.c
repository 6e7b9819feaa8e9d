/* SPDX-License-Identifier: MIT */
/* sluicectl: read the status snapshot sluiced writes after every tick and show it.
 *   sluicectl [-s STATEDIR] status [--json]
 *   sluicectl [-s STATEDIR] explain POOL
 * It never talks to sluiced, Docker or RabbitMQ: status.json is the whole interface, so the
 * tool works for any user who can read the state directory, and cannot disturb the daemon. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

/* The autoconf header (PACKAGE_VERSION). Angle brackets: "config.h" would find src/config.h,
 * the configuration module's header, next to this file. */

#include "macro.h"
#include "status.h"

#define DEFAULT_STATEDIR "/run/sluice"

DEFINE_CLEANUP_FUNC(Status, status_free)

static void help(FILE *f)
{
	fprintf(f,
	        "Usage: sluicectl [-s STATEDIR] status [--json]\n"
	        "       sluicectl [-s STATEDIR] explain POOL\n"
	        "\n"
	        "Show what sluiced knows about its worker pools.\n"
	        "\n"
	        "Commands:\n"
	        "  status          one row per pool: depth and its age, workers, desired, guard\n"
	        "                  (the default when no command is given)\n"
	        "  explain POOL    inputs -> recommendation -> guard -> action for one pool\n"
	        "\n"
	        "Options:\n"
	        "  -s, --state-dir=DIR  where sluiced writes status.json\n"
	        "                       (default: $RUNTIME_DIRECTORY, else " DEFAULT_STATEDIR ")\n"
	        "      --json           status: print the snapshot as JSON\n"
	        "  -h, --help           show this help\n"
	        "  -V, --version        show the version\n");
}

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	enum { ARG_JSON = 0x100 };
	static const struct option options[] = {
	    {"state-dir", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, ARG_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {},
	};
	_cleanup_(status_freep) Status *s = NULL;
	_cleanup_free_ char *statedir_buf = NULL;
	const char *statedir = NULL, *cmd = "status", *pool = NULL;
	bool json = false;
	double now, age, stale;
	int c, r, nargs;

	while ((c = getopt_long(argc, argv, "s:hV", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			statedir = optarg;
			break;
		case ARG_JSON:
			json = true;
			break;
		case 'h':
			help(stdout);
			return 0;
		case 'V':
			printf("sluicectl %s\n", PACKAGE_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'sluicectl --help'.\n");
			return EX_USAGE;
		}
	}

	nargs = argc - optind;
	if (nargs >= 1)
		cmd = argv[optind];
	if (streq(cmd, "status")) {
		if (nargs > 1) {
			fprintf(stderr, "sluicectl: status takes no arguments\n");
			return EX_USAGE;
		}
	} else if (streq(cmd, "explain")) {
		if (nargs != 2) {
			fprintf(stderr, "sluicectl: usage: sluicectl explain POOL\n");
			return EX_USAGE;
		}
		if (json) {
			fprintf(stderr, "sluicectl: --json applies to status only\n");
			return EX_USAGE;
		}
		pool = argv[optind + 1];
	} else {
		fprintf(stderr, "sluicectl: unknown command '%s'. Try 'sluicectl --help'.\n", cmd);
		return EX_USAGE;
	}

	if (!statedir) {
		const char *e = getenv("RUNTIME_DIRECTORY");
		/* systemd may list several directories separated by ':'; ours is the first. */
		if (e && *e) {
			statedir_buf = strndup(e, strcspn(e, ":"));
			if (!statedir_buf) {
				fprintf(stderr, "sluicectl: out of memory\n");
				return 1;
			}
			statedir = statedir_buf;
		} else
			statedir = DEFAULT_STATEDIR;
	}

	r = status_read(statedir, &s);
	if (r == -ENOENT) {
		fprintf(stderr, "sluicectl: no status in %s (is sluiced running?)\n", statedir);
		return EX_UNAVAILABLE;
	}
	if (r == -EBADMSG) {
		fprintf(stderr, "sluicectl: %s/status.json is not a valid status snapshot\n",
		        statedir);
		return EX_UNAVAILABLE;
	}
	if (r < 0) {
		fprintf(stderr, "sluicectl: cannot read %s/status.json: %s\n", statedir,
		        strerror(-r));
		return EX_UNAVAILABLE;
	}

	now = wall_now();
	age = now - s->time;
	stale = 3 * s->interval + 10;
	if (age > stale)
		fprintf(stderr, "sluicectl: status is %.0f s old; is sluiced running?\n", age);
	if (s->dry_run && !json)
		fprintf(stderr, "sluicectl: sluiced runs with --dry-run: it decides but changes "
		                "nothing\n");

	if (pool) {
		r = status_print_explain(s, pool, now, stdout);
		if (r == -ENOENT) {
			fprintf(stderr, "sluicectl: no pool '%s' in the status (pools:", pool);
			for (size_t i = 0; i < s->n_pools; i++)
				fprintf(stderr, " %s", s->pools[i].name);
			fprintf(stderr, "%s)\n", s->n_pools ? "" : " none");
			return 1;
		}
	} else if (json) {
		_cleanup_free_ char *text = status_to_json(s);
		if (!text) {
			fprintf(stderr, "sluicectl: out of memory\n");
			return 1;
		}
		printf("%s\n", text);
	} else
		status_print_table(s, now, stdout);

	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "sluicectl: write error: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
