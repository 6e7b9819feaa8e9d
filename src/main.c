/* SPDX-License-Identifier: MIT */
/* sluiced: command line, exit codes, and hand-over to the manager's loop. */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "macro.h"
#include "manager.h"

static void help(void)
{
	printf("Usage: sluiced [OPTIONS]\n"
	       "Scale Celery worker containers on this Docker host from RabbitMQ queue depth.\n\n"
	       "  -c, --config FILE    configuration file (default %s)\n"
	       "  -t, --check-config   validate the configuration and exit (0, or 78)\n"
	       "      --dry-run        poll and decide, log what would be done, change nothing\n"
	       "      --once           one reconcile pass, then exit\n"
	       "  -v, --verbose        log every tick (debug level)\n"
	       "      --version        print the version and exit\n"
	       "  -h, --help           this help\n",
	       SLUICE_DEFAULT_CONFIG);
}

int main(int argc, char *argv[])
{
	enum { ARG_DRY_RUN = 0x100, ARG_ONCE, ARG_VERSION };
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 't'},
		{"dry-run", no_argument, NULL, ARG_DRY_RUN},
		{"once", no_argument, NULL, ARG_ONCE},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, ARG_VERSION},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	ManagerOptions o = {.config_path = SLUICE_DEFAULT_CONFIG};
	bool check = false, verbose = false;
	int c;

	while ((c = getopt_long(argc, argv, "c:tvh", options, NULL)) >= 0)
		switch (c) {
		case 'c':
			o.config_path = optarg;
			break;
		case 't':
			check = true;
			break;
		case ARG_DRY_RUN:
			o.dry_run = true;
			break;
		case ARG_ONCE:
			o.once = true;
			break;
		case 'v':
			verbose = true;
			break;
		case ARG_VERSION:
			printf("sluiced %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			help();
			return 0;
		default:
			return EX_USAGE;
		}
	if (optind < argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
		return EX_USAGE;
	}
	log_setup(verbose ? LOG_DEBUG : LOG_INFO);

	Config *config = NULL;
	_cleanup_free_ char *err = NULL;
	int r = config_load(o.config_path, &config, &err);
	if (r < 0) {
		/* FILE:LINE: message. With -t it is for a person (or an editor) and goes out bare;
		 * as a daemon it carries the priority prefix for journald like every log line. */
		fprintf(stderr, "%s%s\n", check ? "" : "<3>", err ? err : strerror(-r));
		return EX_CONFIG;
	}
	if (check) {
		printf("%s: OK (%zu pool%s)\n", o.config_path, config->n_pools,
		       config->n_pools == 1 ? "" : "s");
		config_free(config);
		return 0;
	}

	Manager *m = NULL;
	r = manager_new(&o, config, &m);
	if (r < 0)
		return EX_UNAVAILABLE;
	r = manager_run(m);
	manager_free(m);
	if (r < 0) {
		log_error("event loop failed: %s", strerror(-r));
		return EX_SOFTWARE;
	}
	return 0;
}
