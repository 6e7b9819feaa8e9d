/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static int journal_attached = -1; /* -1 = not checked yet */

void log_setup(int level)
{
	max_level = level;
	journal_attached = -1;
}

int log_get_max_level(void)
{
	return max_level;
}

/* $JOURNAL_STREAM is "DEV:INO" of the stream journald gave us; it is ours only while stderr
 * still is that stream (a child or a redirect may have inherited the variable). */
static bool stderr_is_journal(void)
{
	if (journal_attached >= 0)
		return journal_attached;
	journal_attached = 0;
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    st.st_dev == dev && st.st_ino == ino)
		journal_attached = 1;
	return journal_attached;
}

static void log_line(int level, const char *msg)
{
	int saved = errno;
	fprintf(stderr, "<%d>%s\n", level, msg);
	fflush(stderr);
	errno = saved;
}

void log_full(int level, const char *fmt, ...)
{
	if (level > max_level)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log_line(level, buf);
}

void log_pool(int level, const LogFields *f, const char *fmt, ...)
{
	if (level > max_level)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);

	if (!stderr_is_journal()) {
		log_line(level, buf);
		return;
	}

	char depth[64] = "SLUICE_DEPTH=", desired[64] = "SLUICE_DESIRED=",
	     current[64] = "SLUICE_CURRENT=";
	if (f->depth >= 0)
		snprintf(depth, sizeof depth, "SLUICE_DEPTH=%.0f", f->depth);
	if (f->desired >= 0)
		snprintf(desired, sizeof desired, "SLUICE_DESIRED=%d", f->desired);
	if (f->current >= 0)
		snprintf(current, sizeof current, "SLUICE_CURRENT=%d", f->current);
	int r = sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%d", level, "SLUICE_POOL=%s",
				f->pool ? f->pool : "", "%s", depth, "%s", desired, "%s", current,
				"SLUICE_ACTION=%s", f->action ? f->action : "", "SYSLOG_IDENTIFIER=sluiced",
				NULL);
	if (r < 0)
		log_line(level, buf);
}
