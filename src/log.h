/* SPDX-License-Identifier: MIT */
/* Logging: one line per event on stderr with a "<N>" syslog priority prefix, which journald
 * reads as the priority. When stderr is connected to journald ($JOURNAL_STREAM matches), the
 * pool-scoped variant also sends structured fields SLUICE_POOL=, SLUICE_DEPTH=, ... via
 * sd_journal_send(). Messages never contain secrets: callers pass none. */
#pragma once

#include <syslog.h>

#include "macro.h"

/* Fields attached to pool events (any may be NULL / negative = absent). */
typedef struct {
	const char *pool;
	double depth;   /* < 0: unknown */
	int desired;    /* < 0: absent */
	int current;    /* < 0: absent */
	const char *action;
} LogFields;

void log_setup(int max_level); /* LOG_INFO by default, LOG_DEBUG with --verbose */
int log_get_max_level(void);
void log_full(int level, const char *fmt, ...) _printf_(2, 3);
void log_pool(int level, const LogFields *f, const char *fmt, ...) _printf_(3, 4);

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)
