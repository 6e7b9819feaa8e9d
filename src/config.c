/* SPDX-License-Identifier: MIT */
/* Configuration: libconfig -> Config, with every check in one pass and one precise message.
 * libconfig only knows syntax; everything else (unknown keys, types, ranges, cross-field rules,
 * secrets) is checked here, and each error names the file and line of the setting at fault. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, memrchr, qsort_r, explicit_bzero */
#endif

#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>

#include "macro.h"

/* Durations above a year are certainly typos, and this keeps every later conversion to
 * microseconds far away from overflow. */
#define DURATION_MAX (365.0 * 24 * 3600)
/* Docker refuses containers with less memory than this. */
#define MEMORY_MIN (6LL * 1024 * 1024)
#define POOL_NAME_MAX 40
#define KEY_PATH_MAX 160

typedef struct {
	const char *path;        /* the top file, for settings libconfig gives no file for */
	const char *include_dir; /* where @include looks, i.e. the top file's directory */
	char *error;             /* first error, "FILE:LINE: ..." */
} Parser;

/* libconfig 1.5 records an included file under the name written in @include, although it
 * opened it inside the include dir; give messages the path that was really read. */
static int source_path(const Parser *p, const char *file, char *buf, size_t n)
{
	if (!file || streq(file, p->path))
		file = p->path;
	else if (file[0] != '/' && p->include_dir) {
		if (snprintf(buf, n, "%s/%s", p->include_dir, file) >= (int)n)
			return -ENAMETOOLONG;
		return 0;
	}
	if (snprintf(buf, n, "%s", file) >= (int)n)
		return -ENAMETOOLONG;
	return 0;
}

static void parser_set_error(Parser *p, const char *file, int line, const char *fmt, va_list ap)
    _printf_(4, 0);
static void parser_set_error(Parser *p, const char *file, int line, const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = NULL;

	if (p->error) /* keep the first error: later ones are often its consequences */
		return;
	if (vasprintf(&msg, fmt, ap) < 0)
		return;
	if (asprintf(&p->error, "%s:%d: %s", file, line, msg) < 0)
		p->error = NULL;
}

/* Record an error at setting S (its file and line) and return -EINVAL. The root group has no
 * line; it stands for the whole file, reported as line 1. */
static int fail(Parser *p, const config_setting_t *s, const char *fmt, ...) _printf_(3, 4);
static int fail(Parser *p, const config_setting_t *s, const char *fmt, ...)
{
	char file[PATH_MAX];
	int line = s ? config_setting_source_line(s) : 0;
	va_list ap;

	(void)source_path(p, s ? config_setting_source_file(s) : NULL, file, sizeof file);
	va_start(ap, fmt);
	parser_set_error(p, file, line > 0 ? line : 1, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* libconfig crashes on a NULL group; an absent group simply has no members. */
static config_setting_t *member(const config_setting_t *g, const char *key)
{
	return g ? config_setting_get_member(g, key) : NULL;
}

static const char *type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	case CONFIG_TYPE_GROUP:
		return "a group";
	default:
		return "nothing";
	}
}

/* "pools[0]" + "max" -> "pools[0].max"; a NULL prefix is the top level. */
static const char *key_path(char *buf, size_t n, const char *where, const char *key)
{
	/* Names are short; a cut one still points at the right line. */
	if (snprintf(buf, n, "%s%s%s", where ?: "", where ? "." : "", key) >= (int)n)
		buf[n - 1] = '\0';
	return buf;
}

/* Every member of G must be in ALLOWED (NULL-terminated); CONTEXT says where we are. */
static int check_keys(Parser *p, const config_setting_t *g, const char *const *allowed,
                      const char *context)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		const config_setting_t *m = config_setting_get_elem(g, i);
		const char *name = config_setting_name(m);
		bool ok = false;
		char list[512] = "";

		for (const char *const *a = allowed; *a; a++)
			if (streq(*a, name))
				ok = true;
		if (ok)
			continue;
		for (const char *const *a = allowed; *a; a++) {
			if (a != allowed)
				strncat(list, ", ", sizeof(list) - strlen(list) - 1);
			strncat(list, *a, sizeof(list) - strlen(list) - 1);
		}
		return fail(p, m, "unknown key \"%s\" %s; allowed: %s", name, context, list);
	}
	return 0;
}

static int need_group(Parser *p, const config_setting_t *s, const char *kp, const char *example)
{
	if (config_setting_is_group(s))
		return 0;
	return fail(p, s, "%s: must be a group %s (got %s)", kp, example, type_name(s));
}

/* Optional non-empty string. Returns 1 and sets *ret if present, 0 if absent, -EINVAL. The
 * value is never echoed in errors, so this is safe for secrets. */
static int get_string(Parser *p, const config_setting_t *g, const char *where, const char *key,
                      const char **ret)
{
	char kp[KEY_PATH_MAX];
	const config_setting_t *s = member(g, key);
	const char *v;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, key);
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return fail(p, s, "%s: must be a string (got %s)", kp, type_name(s));
	v = config_setting_get_string(s);
	if (!v || !*v)
		return fail(p, s, "%s: must be a non-empty string", kp);
	*ret = v;
	return 1;
}

static int dup_string(Parser *p, const config_setting_t *g, const char *where, const char *key,
                      const char *def, char **ret)
{
	const char *v = def;
	int r = get_string(p, g, where, key, &v);

	if (r < 0)
		return r;
	if (!v) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(v);
	return *ret ? 0 : -ENOMEM;
}

/* Optional number (int or float: durations may be fractional) in [lo, hi], lo exclusive if
 * LO_OPEN. ALLOWED describes the range for the message. */
static int get_number(Parser *p, const config_setting_t *g, const char *where, const char *key,
                      double lo, bool lo_open, double hi, const char *allowed, double *ret)
{
	char kp[KEY_PATH_MAX];
	const config_setting_t *s = member(g, key);
	double v;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, key);
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v = (double)config_setting_get_int64(s);
		break;
	case CONFIG_TYPE_FLOAT:
		v = config_setting_get_float(s);
		break;
	default:
		return fail(p, s, "%s: must be %s (got %s)", kp, allowed, type_name(s));
	}
	if (!isfinite(v) || (lo_open ? v <= lo : v < lo) || v > hi)
		return fail(p, s, "%s: must be %s (got %g)", kp, allowed, v);
	*ret = v;
	return 1;
}

static int get_seconds(Parser *p, const config_setting_t *g, const char *where, const char *key,
                       bool positive, double *ret)
{
	return get_number(p, g, where, key, 0, positive, DURATION_MAX,
	                  positive ? "a number of seconds > 0 and <= 31536000"
	                           : "a number of seconds >= 0 and <= 31536000",
	                  ret);
}

/* Optional integer in [lo, hi]; floats are refused even when whole, so that "max = 2.5" and
 * "max = 2.0" get the same answer. */
static int get_int(Parser *p, const config_setting_t *g, const char *where, const char *key,
                   long long lo, long long hi, const char *allowed, int *ret)
{
	char kp[KEY_PATH_MAX];
	const config_setting_t *s = member(g, key);
	long long v;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, key);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return fail(p, s, "%s: must be %s (got %s)", kp, allowed, type_name(s));
	v = config_setting_get_int64(s);
	if (v < lo || v > hi)
		return fail(p, s, "%s: must be %s (got %lld)", kp, allowed, v);
	*ret = (int)v;
	return 1;
}

static int get_bool(Parser *p, const config_setting_t *g, const char *where, const char *key,
                    bool *ret)
{
	char kp[KEY_PATH_MAX];
	const config_setting_t *s = member(g, key);

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, key);
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return fail(p, s, "%s: must be true or false (got %s)", kp, type_name(s));
	*ret = config_setting_get_bool(s);
	return 1;
}

/* Optional array or list of non-empty strings into a NULL-terminated copy. NONEMPTY: an empty
 * array is an error. CHECK (may be NULL) validates each element and returns an error text. */
static int get_strv(Parser *p, const config_setting_t *g, const char *where, const char *key,
                    bool nonempty, const char *(*check)(const char *), char ***ret, size_t *ret_n)
{
	char kp[KEY_PATH_MAX];
	const config_setting_t *s = member(g, key);
	char **v;
	int n;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, key);
	if (!config_setting_is_array(s) && !config_setting_is_list(s))
		return fail(p, s, "%s: must be an array of strings [ \"...\", ... ] (got %s)", kp,
		            type_name(s));
	n = config_setting_length(s);
	if (n == 0 && nonempty)
		return fail(p, s, "%s: must be a non-empty array of strings (got [ ])", kp);
	v = calloc((size_t)n + 1, sizeof(char *));
	if (!v)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		const char *str, *why;

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			strv_free_n(v, (size_t)n);
			return fail(p, e, "%s[%d]: must be a non-empty string (got %s)", kp, i,
			            type_name(e));
		}
		str = config_setting_get_string(e);
		if (!*str) {
			strv_free_n(v, (size_t)n);
			return fail(p, e, "%s[%d]: must be a non-empty string", kp, i);
		}
		if (check && (why = check(str))) {
			int r = fail(p, e, "%s[%d]: %s (got \"%s\")", kp, i, why, str);
			strv_free_n(v, (size_t)n);
			return r;
		}
		v[i] = strdup(str);
		if (!v[i]) {
			strv_free_n(v, (size_t)n);
			return -ENOMEM;
		}
	}
	if (n == 0) {
		free(v);
		v = NULL;
	}
	*ret = v;
	*ret_n = (size_t)n;
	return 1;
}

/* "http://user:pw@host" would put a secret where logs and status show URLs. REST is the URL
 * after "scheme://". */
static bool url_has_userinfo(const char *rest)
{
	size_t auth = strcspn(rest, "/?#");
	return memchr(rest, '@', auth) != NULL;
}

static bool url_has_password(const char *rest)
{
	size_t auth = strcspn(rest, "/?#");
	const char *at = memrchr(rest, '@', auth);
	return at && memchr(rest, ':', (size_t)(at - rest)) != NULL;
}

static bool url_has_scheme(const char *url, const char *const *schemes, const char **ret_rest)
{
	for (const char *const *s = schemes; *s; s++)
		if (strncmp(url, *s, strlen(*s)) == 0) {
			*ret_rest = url + strlen(*s);
			return true;
		}
	return false;
}

/* Read the first line of a secret file; the trailing newline (and CR) is not part of it.
 * -ENODATA: the first line is empty. */
static int read_secret(const char *path, char **ret)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	struct stat st;
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (fstat(fileno(f), &st) < 0)
		r = -errno;
	else if (S_ISDIR(st.st_mode))
		r = -EISDIR;
	else if (!S_ISREG(st.st_mode))
		r = -EINVAL;
	if (r < 0) {
		fclose(f);
		return r;
	}
	errno = 0;
	n = getline(&line, &cap, f);
	r = errno;
	fclose(f);
	if (n < 0 && r != 0)
		return -r;
	if (n < 0)
		n = 0; /* empty file */
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (n == 0)
		return -ENODATA;
	*ret = TAKE_PTR(line);
	return 0;
}

static const char *secret_strerror(int r)
{
	if (r == -ENODATA)
		return "its first line is empty";
	if (r == -EINVAL)
		return "not a regular file";
	return strerror(-r);
}

/* An inline secret in a file others can read is a leak waiting to happen: refuse it. */
static int check_not_world_readable(Parser *p, const config_setting_t *s, const char *what)
{
	char file[PATH_MAX];
	struct stat st;
	int line = config_setting_source_line(s);

	if (source_path(p, config_setting_source_file(s), file, sizeof file) < 0)
		return fail(p, s, "%s is set inline in a file whose path is too long to check",
		            what);
	if (stat(file, &st) < 0)
		return fail(p, s, "%s is set inline but %s cannot be checked: %s", what, file,
		            strerror(errno));
	if (!(st.st_mode & S_IROTH))
		return 0;
	if (!p->error &&
	    asprintf(&p->error,
	             "%s:%d: %s is set inline but %s is world-readable; chmod o-r %s or use "
	             "password_file / LoadCredential=rabbitmq-password",
	             file, line, what, file, file) < 0)
		p->error = NULL;
	return -EACCES;
}

static const char *const top_keys[] = {"interval", "docker", "rabbitmq", "metrics", "pools", NULL};
static const char *const docker_keys[] = {"socket", NULL};
static const char *const rabbitmq_keys[] = {"url",      "user",    "password", "password_file",
                                            "amqp_url", "timeout", "tls",      NULL};
static const char *const tls_keys[] = {"ca_file", "verify", NULL};
static const char *const metrics_keys[] = {"listen", NULL};
static const char *const pool_keys[] = {
    "name",        "vhost",        "queues",    "count",    "source",
    "target",      "activation",   "min",       "max",      "cooldown",
    "scale_up",    "scale_down",   "on_error",  "fallback", "failure_threshold",
    "stop_signal", "stop_timeout", "container", NULL};
static const char *const rule_keys[] = {"stabilization", "max_step", "period", NULL};
static const char *const container_keys[] = {"image",  "command", "env",     "network",
                                             "memory", "cpus",    "volumes", "labels",
                                             "user",   "init",    NULL};

static int parse_docker(Parser *p, const config_setting_t *root, Config *c)
{
	const config_setting_t *g = config_setting_get_member(root, "docker");
	const char *sock = "/run/docker.sock";
	int r;

	if (g) {
		if ((r = need_group(p, g, "docker", "docker: { socket = \"...\"; }")) < 0)
			return r;
		if ((r = check_keys(p, g, docker_keys, "in group docker")) < 0)
			return r;
		if ((r = get_string(p, g, "docker", "socket", &sock)) < 0)
			return r;
		if (r > 0 && sock[0] != '/')
			return fail(p, member(g, "socket"),
			            "docker.socket: must be an absolute path (got \"%s\")", sock);
	}
	c->docker_socket = strdup(sock);
	return c->docker_socket ? 0 : -ENOMEM;
}

static int parse_password(Parser *p, const config_setting_t *root, const config_setting_t *g,
                          Config *c)
{
	const config_setting_t *pw = member(g, "password");
	const config_setting_t *pwf = member(g, "password_file");
	const char *v = NULL, *creds;
	int r;

	if (pw && pwf)
		return fail(p, pwf,
		            "rabbitmq: password and password_file are both set; use only one "
		            "(password_file is preferred)");
	if (pw) {
		/* Never echo the value: get_string only reports its type. */
		if ((r = get_string(p, g, "rabbitmq", "password", &v)) < 0)
			return r;
		if ((r = check_not_world_readable(p, pw, "rabbitmq.password")) < 0)
			return r;
		c->rmq_password = strdup(v);
		return c->rmq_password ? 0 : -ENOMEM;
	}
	if (pwf) {
		if ((r = get_string(p, g, "rabbitmq", "password_file", &v)) < 0)
			return r;
		if (v[0] != '/')
			return fail(p, pwf,
			            "rabbitmq.password_file: must be an absolute path (got \"%s\")",
			            v);
		r = read_secret(v, &c->rmq_password);
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return fail(
			    p, pwf,
			    "rabbitmq.password_file: cannot read \"%s\": %s; the file must "
			    "be readable by sluiced and hold the password on its first line",
			    v, secret_strerror(r));
		return 0;
	}

	/* systemd's LoadCredential=rabbitmq-password: the unit can hand over the secret without
	 * it ever being in a file sluiced's user owns. */
	creds = getenv("CREDENTIALS_DIRECTORY");
	if (creds && *creds) {
		_cleanup_free_ char *cred = NULL;

		if (asprintf(&cred, "%s/rabbitmq-password", creds) < 0)
			return -ENOMEM;
		r = read_secret(cred, &c->rmq_password);
		if (r == 0 || r == -ENOMEM)
			return r;
		if (r != -ENOENT)
			return fail(p, g ?: root,
			            "credential %s: cannot read: %s; it must hold the RabbitMQ "
			            "password on its first line",
			            cred, secret_strerror(r));
	}

	/* RabbitMQ's own default account; any other user needs a real password. */
	if (!streq(c->rmq_user, "guest"))
		return fail(p, g ?: root,
		            "rabbitmq: no password for user \"%s\"; set password_file, password, "
		            "or LoadCredential=rabbitmq-password (only user \"guest\" defaults "
		            "to password \"guest\")",
		            c->rmq_user);
	c->rmq_password = strdup("guest");
	return c->rmq_password ? 0 : -ENOMEM;
}

static int parse_rabbitmq(Parser *p, const config_setting_t *root, Config *c)
{
	static const char *const http[] = {"http://", "https://", NULL};
	static const char *const amqp[] = {"amqp://", "amqps://", NULL};
	const config_setting_t *g = config_setting_get_member(root, "rabbitmq");
	const config_setting_t *tls = NULL;
	const char *rest;
	size_t n;
	int r;

	c->rmq_timeout = 3.0;
	c->tls_verify = true;
	if (g) {
		if ((r = need_group(p, g, "rabbitmq", "rabbitmq: { url = \"...\"; ... }")) < 0)
			return r;
		if ((r = check_keys(p, g, rabbitmq_keys, "in group rabbitmq")) < 0)
			return r;
	}

	/* URLs are never echoed: a mistyped one may still carry credentials. */
	if ((r = dup_string(p, g, "rabbitmq", "url", "http://127.0.0.1:15672", &c->rmq_url)) < 0)
		return r;
	if (!url_has_scheme(c->rmq_url, http, &rest) || !*rest || *rest == '/')
		return fail(p, member(g, "url"),
		            "rabbitmq.url: must be an http:// or https:// URL with a host, e.g. "
		            "\"http://127.0.0.1:15672\"");
	if (url_has_userinfo(rest))
		return fail(p, member(g, "url"),
		            "rabbitmq.url: must not carry credentials; use user and "
		            "password_file");
	n = strlen(c->rmq_url);
	while (n > 0 && c->rmq_url[n - 1] == '/')
		c->rmq_url[--n] = '\0';

	if ((r = dup_string(p, g, "rabbitmq", "user", "guest", &c->rmq_user)) < 0)
		return r;

	if ((r = dup_string(p, g, "rabbitmq", "amqp_url", "amqp://127.0.0.1:5672/", &c->amqp_url)) <
	    0)
		return r;
	if (!url_has_scheme(c->amqp_url, amqp, &rest) || !*rest || *rest == '/')
		return fail(p, member(g, "amqp_url"),
		            "rabbitmq.amqp_url: must be an amqp:// or amqps:// URL with a host, "
		            "e.g. \"amqp://127.0.0.1:5672/\"");
	/* Credentials in the AMQP URL are an inline password too. */
	if (url_has_password(rest) &&
	    (r = check_not_world_readable(p, member(g, "amqp_url"),
	                                  "a password in rabbitmq.amqp_url")) < 0)
		return r;

	if ((r = get_seconds(p, g, "rabbitmq", "timeout", true, &c->rmq_timeout)) < 0)
		return r;

	tls = member(g, "tls");
	if (tls) {
		const char *ca = NULL;

		if ((r = need_group(p, tls, "rabbitmq.tls",
		                    "tls: { ca_file = \"...\"; verify = true; }")) < 0)
			return r;
		if ((r = check_keys(p, tls, tls_keys, "in group rabbitmq.tls")) < 0)
			return r;
		if ((r = get_string(p, tls, "rabbitmq.tls", "ca_file", &ca)) < 0)
			return r;
		if (ca && !(c->tls_ca_file = strdup(ca)))
			return -ENOMEM;
		if ((r = get_bool(p, tls, "rabbitmq.tls", "verify", &c->tls_verify)) < 0)
			return r;
	}

	return parse_password(p, root, g, c);
}

static bool listen_valid(const char *s)
{
	const char *colon = strrchr(s, ':');
	char host[256];
	size_t hl;
	char *end;
	long port;

	if (!colon || colon == s)
		return false;
	hl = (size_t)(colon - s);
	if (hl >= sizeof host)
		return false;
	memcpy(host, s, hl);
	host[hl] = '\0';

	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end || errno || port < 1 || port > 65535)
		return false;

	if (host[0] == '[') {
		struct in6_addr a6;

		if (hl < 3 || host[hl - 1] != ']')
			return false;
		host[hl - 1] = '\0';
		return inet_pton(AF_INET6, host + 1, &a6) == 1;
	}
	/* An IPv4 literal or a host name; a bare IPv6 address needs brackets. */
	for (const char *h = host; *h; h++)
		if (!isalnum((unsigned char)*h) && *h != '.' && *h != '-')
			return false;
	return true;
}

static int parse_metrics(Parser *p, const config_setting_t *root, Config *c)
{
	const config_setting_t *g = config_setting_get_member(root, "metrics");
	const char *l = NULL;
	int r;

	if (!g)
		return 0; /* absent = off */
	if ((r = need_group(p, g, "metrics", "metrics: { listen = \"HOST:PORT\"; }")) < 0)
		return r;
	if ((r = check_keys(p, g, metrics_keys, "in group metrics")) < 0)
		return r;
	if ((r = get_string(p, g, "metrics", "listen", &l)) < 0)
		return r;
	if (r == 0)
		return fail(p, g,
		            "missing required key \"listen\" in group metrics; set listen = "
		            "\"HOST:PORT\" or remove the group to turn metrics off");
	if (!listen_valid(l))
		return fail(p, member(g, "listen"),
		            "metrics.listen: must be \"HOST:PORT\" with an IPv4 address, host name "
		            "or [IPv6] address and a port 1-65535 (got \"%s\")",
		            l);
	c->metrics_listen = strdup(l);
	return c->metrics_listen ? 0 : -ENOMEM;
}

static bool pool_name_valid(const char *s)
{
	if (!isalnum((unsigned char)s[0]) || strlen(s) > POOL_NAME_MAX)
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '-')
			return false;
	return true;
}

static int parse_rule(Parser *p, const config_setting_t *pool, const char *where, const char *key,
                      const char *context, ScaleRule *rule)
{
	const config_setting_t *g = config_setting_get_member(pool, key);
	char kp[KEY_PATH_MAX], ctx[KEY_PATH_MAX];
	int r;

	if (!g)
		return 0;
	key_path(kp, sizeof kp, where, key);
	snprintf(ctx, sizeof ctx, "in %s %s", context, key);
	if ((r = need_group(p, g, kp, "{ stabilization = S; max_step = N; period = S; }")) < 0)
		return r;
	if ((r = check_keys(p, g, rule_keys, ctx)) < 0)
		return r;
	if ((r = get_seconds(p, g, kp, "stabilization", false, &rule->stabilization)) < 0)
		return r;
	if ((r = get_int(p, g, kp, "max_step", 1, INT_MAX, "an integer >= 1", &rule->max_step)) < 0)
		return r;
	if ((r = get_seconds(p, g, kp, "period", true, &rule->period)) < 0)
		return r;
	return 0;
}

/* "512M", "1G", "256k", "1073741824", each with an optional trailing b/B; binary units. */
static int parse_memory_string(const char *s, int64_t *ret)
{
	unsigned long long v = 0, mult = 1;
	const char *c = s;

	if (!isdigit((unsigned char)*c))
		return -EINVAL;
	for (; isdigit((unsigned char)*c); c++) {
		if (v > (ULLONG_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (unsigned)(*c - '0');
	}
	switch (*c) {
	case 'k':
	case 'K':
		mult = 1ULL << 10;
		c++;
		break;
	case 'm':
	case 'M':
		mult = 1ULL << 20;
		c++;
		break;
	case 'g':
	case 'G':
		mult = 1ULL << 30;
		c++;
		break;
	}
	if (*c == 'b' || *c == 'B')
		c++;
	if (*c)
		return -EINVAL;
	if (v > (unsigned long long)INT64_MAX / mult)
		return -ERANGE;
	*ret = (int64_t)(v * mult);
	return 0;
}

static int parse_memory(Parser *p, const config_setting_t *g, const char *where, int64_t *ret)
{
	static const char allowed[] =
	    "bytes as an integer or a string like \"512M\", \"1G\", \"256k\" (k, M, G are "
	    "binary units; optional trailing B), at least 6M (Docker's minimum)";
	const config_setting_t *s = config_setting_get_member(g, "memory");
	char kp[KEY_PATH_MAX];
	int64_t v;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, "memory");
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v = config_setting_get_int64(s);
		if (v < MEMORY_MIN)
			return fail(p, s, "%s: must be %s (got %lld)", kp, allowed, (long long)v);
		break;
	case CONFIG_TYPE_STRING:
		if (parse_memory_string(config_setting_get_string(s), &v) < 0 || v < MEMORY_MIN)
			return fail(p, s, "%s: must be %s (got \"%s\")", kp, allowed,
			            config_setting_get_string(s));
		break;
	default:
		return fail(p, s, "%s: must be %s (got %s)", kp, allowed, type_name(s));
	}
	*ret = v;
	return 1;
}

static const char *check_env(const char *s)
{
	const char *eq = strchr(s, '=');
	if (!eq || eq == s)
		return "must be \"NAME=value\" with a non-empty NAME";
	return NULL;
}

static bool volume_opts_valid(const char *opts)
{
	static const char *const allowed[] = {"ro",      "rw",       "z",      "Z",
	                                      "shared",  "rshared",  "slave",  "rslave",
	                                      "private", "rprivate", "nocopy", NULL};
	_cleanup_free_ char *copy = strdup(opts);
	int access = 0;
	char *save = NULL;

	if (!copy || !*copy)
		return false;
	for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			if (streq(*a, o))
				ok = true;
		if (!ok)
			return false;
		if (streq(o, "ro") || streq(o, "rw"))
			access++;
	}
	return access <= 1;
}

static const char *check_volume(const char *s)
{
	static const char why[] = "must be \"/host/path:/container/path\" with an optional "
	                          ":ro or :rw (both paths absolute)";
	_cleanup_free_ char *copy = strdup(s);
	char *dst, *opts;

	if (!copy)
		return why;
	dst = strchr(copy, ':');
	if (!dst || copy[0] != '/')
		return why;
	*dst++ = '\0';
	opts = strchr(dst, ':');
	if (opts)
		*opts++ = '\0';
	if (dst[0] != '/' || (opts && !volume_opts_valid(opts)))
		return why;
	return NULL;
}

/* Labels: a group of string values (simple keys) or an array of "KEY=value" strings, which
 * also allows dotted keys such as "com.example.team" that libconfig names cannot hold. */
static int parse_labels(Parser *p, const config_setting_t *g, const char *where, ContainerSpec *cs)
{
	const config_setting_t *s = config_setting_get_member(g, "labels");
	char kp[KEY_PATH_MAX];
	int n;

	if (!s)
		return 0;
	key_path(kp, sizeof kp, where, "labels");
	if (!config_setting_is_group(s) && !config_setting_is_array(s) &&
	    !config_setting_is_list(s))
		return fail(p, s,
		            "%s: must be a group { key = \"value\"; ... } or an array of "
		            "\"key=value\" strings (got %s)",
		            kp, type_name(s));
	n = config_setting_length(s);
	if (n == 0)
		return 0;
	cs->label_keys = calloc((size_t)n + 1, sizeof(char *));
	cs->label_values = calloc((size_t)n + 1, sizeof(char *));
	if (!cs->label_keys || !cs->label_values)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		const char *str, *eq;
		char *k, *v;

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			if (config_setting_is_group(s))
				return fail(p, e, "%s.%s: must be a string (got %s)", kp,
				            config_setting_name(e), type_name(e));
			return fail(p, e, "%s[%d]: must be a \"key=value\" string (got %s)", kp, i,
			            type_name(e));
		}
		str = config_setting_get_string(e);
		if (config_setting_is_group(s)) {
			k = strdup(config_setting_name(e));
			v = strdup(str);
		} else {
			eq = strchr(str, '=');
			if (!eq || eq == str)
				return fail(
				    p, e,
				    "%s[%d]: must be \"key=value\" with a non-empty key (got "
				    "\"%s\")",
				    kp, i, str);
			k = strndup(str, (size_t)(eq - str));
			v = strdup(eq + 1);
		}
		cs->label_keys[i] = k;
		cs->label_values[i] = v;
		cs->n_labels = (size_t)i + 1;
		if (!k || !v)
			return -ENOMEM;
		/* sluice's own labels decide ownership; a user label must never forge them. */
		if (strncmp(k, "io.sluice.", strlen("io.sluice.")) == 0)
			return fail(p, e,
			            "%s: key \"%s\" is reserved; keys starting with \"io.sluice.\" "
			            "belong to sluice",
			            kp, k);
		for (int j = 0; j < i; j++)
			if (streq(cs->label_keys[j], k))
				return fail(p, e,
				            "%s: duplicate key \"%s\"; each key may appear once",
				            kp, k);
	}
	return 0;
}

static int parse_container(Parser *p, const config_setting_t *pool, const char *where,
                           const char *context, ContainerSpec *cs)
{
	const config_setting_t *g = config_setting_get_member(pool, "container");
	char kp[KEY_PATH_MAX], ctx[KEY_PATH_MAX];
	int r;

	if (!g)
		return fail(p, pool,
		            "missing required key \"container\" in %s; set container: { image = "
		            "\"...\"; ... }",
		            context);
	key_path(kp, sizeof kp, where, "container");
	snprintf(ctx, sizeof ctx, "in %s container", context);
	if ((r = need_group(p, g, kp, "container: { image = \"...\"; ... }")) < 0)
		return r;
	if ((r = check_keys(p, g, container_keys, ctx)) < 0)
		return r;

	if ((r = dup_string(p, g, kp, "image", NULL, &cs->image)) < 0)
		return r;
	if (!cs->image)
		return fail(p, g, "missing required key \"image\" %s; set image = \"name:tag\"",
		            ctx);
	if ((r = get_strv(p, g, kp, "command", true, NULL, &cs->command, &cs->n_command)) < 0)
		return r;
	if ((r = get_strv(p, g, kp, "env", false, check_env, &cs->env, &cs->n_env)) < 0)
		return r;
	if ((r = dup_string(p, g, kp, "network", NULL, &cs->network)) < 0)
		return r;
	if ((r = parse_memory(p, g, kp, &cs->memory)) < 0)
		return r;
	if ((r = get_number(p, g, kp, "cpus", 0, true, 1e6, "a number > 0 (CPUs, e.g. 0.5)",
	                    &cs->cpus)) < 0)
		return r;
	if ((r = get_strv(p, g, kp, "volumes", false, check_volume, &cs->volumes, &cs->n_volumes)) <
	    0)
		return r;
	if ((r = parse_labels(p, g, kp, cs)) < 0)
		return r;
	if ((r = dup_string(p, g, kp, "user", NULL, &cs->user)) < 0)
		return r;
	if ((r = get_bool(p, g, kp, "init", &cs->init)) < 0)
		return r;
	return 0;
}

static int parse_stop_signal(Parser *p, const config_setting_t *pool, const char *where, char **ret)
{
	static const char *const signals[] = {"SIGTERM", "SIGINT",  "SIGQUIT", "SIGHUP",
	                                      "SIGUSR1", "SIGUSR2", "SIGKILL", NULL};
	const char *v = "SIGTERM";
	char kp[KEY_PATH_MAX], norm[16];
	int r;

	if ((r = get_string(p, pool, where, "stop_signal", &v)) < 0)
		return r;
	key_path(kp, sizeof kp, where, "stop_signal");
	/* Accept "TERM", "sigterm" and "SIGTERM" alike; Docker gets the canonical name. */
	if (strlen(v) < 8) {
		snprintf(norm, sizeof norm, "%s%s", strncasecmp(v, "SIG", 3) == 0 ? "" : "SIG", v);
		for (char *c = norm; *c; c++)
			*c = (char)toupper((unsigned char)*c);
		for (const char *const *s = signals; *s; s++)
			if (streq(*s, norm)) {
				*ret = strdup(norm);
				return *ret ? 0 : -ENOMEM;
			}
	}
	return fail(
	    p, config_setting_get_member(pool, "stop_signal"),
	    "%s: must be one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL "
	    "(the SIG prefix is optional) (got \"%s\")",
	    kp, v);
}

static int parse_on_error(Parser *p, const config_setting_t *g, const char *where, PoolConfig *pc)
{
	const config_setting_t *oe = config_setting_get_member(g, "on_error");
	const config_setting_t *fb = config_setting_get_member(g, "fallback");
	const config_setting_t *ft = config_setting_get_member(g, "failure_threshold");
	char kp[KEY_PATH_MAX], allowed[96];
	const char *v = NULL;
	int r;

	pc->on_error = ON_ERROR_HOLD;
	pc->failure_threshold = 3;
	if ((r = get_string(p, g, where, "on_error", &v)) < 0)
		return r;
	if (v && !streq(v, "hold") && !streq(v, "fallback"))
		return fail(p, oe, "%s: must be \"hold\" or \"fallback\" (got \"%s\")",
		            key_path(kp, sizeof kp, where, "on_error"), v);
	if (v && streq(v, "hold") && fb)
		return fail(p, fb,
		            "%s: on_error = \"hold\" and fallback are both set; use one of them",
		            key_path(kp, sizeof kp, where, "fallback"));
	if (v && streq(v, "fallback") && !fb)
		return fail(p, oe, "%s: on_error = \"fallback\" needs fallback = N (workers)",
		            key_path(kp, sizeof kp, where, "on_error"));
	if (!fb) {
		if (ft)
			return fail(p, ft,
			            "%s: only applies with fallback = N; remove it or set "
			            "fallback",
			            key_path(kp, sizeof kp, where, "failure_threshold"));
		return 0;
	}
	snprintf(allowed, sizeof allowed, "an integer in [min, max] = [%d, %d]", pc->min, pc->max);
	if ((r = get_int(p, g, where, "fallback", pc->min, pc->max, allowed, &pc->fallback)) < 0)
		return r;
	if ((r = get_int(p, g, where, "failure_threshold", 1, INT_MAX, "an integer >= 1",
	                 &pc->failure_threshold)) < 0)
		return r;
	pc->on_error = ON_ERROR_FALLBACK;
	return 0;
}

static int parse_pool(Parser *p, const config_setting_t *g, size_t idx, PoolConfig *pc)
{
	char where[32], context[80], in_context[84], file[PATH_MAX];
	const config_setting_t *s;
	const char *name = NULL, *v;
	int r;

	snprintf(where, sizeof where, "pools[%zu]", idx);
	if (!config_setting_is_group(g))
		return fail(p, g, "%s: must be a group { name = \"...\"; ... } (got %s)", where,
		            type_name(g));
	if ((r = source_path(p, config_setting_source_file(g), file, sizeof file)) < 0)
		return fail(p, g, "%s: the path of its file is too long", where);
	pc->file = strdup(file);
	pc->line = config_setting_source_line(g);
	if (!pc->file)
		return -ENOMEM;

	/* Name the pool in messages as soon as we can: "pool "celery"" beats "pools[3]". */
	s = config_setting_get_member(g, "name");
	if (s && config_setting_type(s) == CONFIG_TYPE_STRING &&
	    pool_name_valid(config_setting_get_string(s)))
		snprintf(context, sizeof context, "pool \"%s\"", config_setting_get_string(s));
	else
		snprintf(context, sizeof context, "%s", where);
	snprintf(in_context, sizeof in_context, "in %s", context);
	if ((r = check_keys(p, g, pool_keys, in_context)) < 0)
		return r;

	if ((r = get_string(p, g, where, "name", &name)) < 0)
		return r;
	if (r == 0)
		return fail(p, g, "missing required key \"name\" in %s; set name = \"...\"", where);
	if (!pool_name_valid(name))
		return fail(p, s,
		            "%s.name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most %d "
		            "characters (got \"%s\")",
		            where, POOL_NAME_MAX, name);
	if (!(pc->name = strdup(name)))
		return -ENOMEM;

	if ((r = dup_string(p, g, where, "vhost", "/", &pc->vhost)) < 0)
		return r;
	if ((r = get_strv(p, g, where, "queues", true, NULL, &pc->queues, &pc->n_queues)) < 0)
		return r;
	if (r == 0)
		return fail(p, g,
		            "missing required key \"queues\" in %s; set queues = [ \"name\", ... ]",
		            context);
	/* Depth is the sum over queues: a queue listed twice would be counted twice. */
	for (size_t i = 0; i < pc->n_queues; i++)
		for (size_t j = 0; j < i; j++)
			if (streq(pc->queues[i], pc->queues[j]))
				return fail(p,
				            config_setting_get_elem(
				                config_setting_get_member(g, "queues"), (int)i),
				            "%s.queues[%zu]: queue \"%s\" is listed twice; each "
				            "queue may appear once",
				            where, i, pc->queues[i]);

	v = NULL;
	if ((r = get_string(p, g, where, "source", &v)) < 0)
		return r;
	if (!v || streq(v, "management"))
		pc->source = SOURCE_MANAGEMENT;
	else if (streq(v, "amqp"))
		pc->source = SOURCE_AMQP;
	else
		return fail(p, member(g, "source"),
		            "%s.source: must be \"management\" or \"amqp\" (got \"%s\")", where, v);

	v = NULL;
	if ((r = get_string(p, g, where, "count", &v)) < 0)
		return r;
	if (!v)
		pc->count = pc->source == SOURCE_AMQP ? COUNT_READY : COUNT_READY_UNACKED;
	else if (streq(v, "ready"))
		pc->count = COUNT_READY;
	else if (streq(v, "ready+unacked"))
		pc->count = COUNT_READY_UNACKED;
	else
		return fail(p, member(g, "count"),
		            "%s.count: must be \"ready+unacked\" or \"ready\" (got \"%s\")", where,
		            v);
	if (pc->source == SOURCE_AMQP && pc->count == COUNT_READY_UNACKED)
		return fail(p, member(g, "count"),
		            "%s.count: \"ready+unacked\" is not available with source = \"amqp\" "
		            "(a passive queue.declare reports ready messages only); use count = "
		            "\"ready\" or source = \"management\"",
		            where);

	pc->target = 10;
	if ((r = get_number(p, g, where, "target", 0, true, 1e12,
	                    "a number > 0 (messages per worker)", &pc->target)) < 0)
		return r;
	pc->activation = 0;
	if ((r = get_number(p, g, where, "activation", 0, false, 1e12, "a number >= 0 (messages)",
	                    &pc->activation)) < 0)
		return r;
	pc->min = 0;
	if ((r = get_int(p, g, where, "min", 0, INT_MAX, "an integer >= 0", &pc->min)) < 0)
		return r;
	pc->max = 10;
	if ((r = get_int(p, g, where, "max", 1, INT_MAX, "an integer >= 1 and >= min", &pc->max)) <
	    0)
		return r;
	if (pc->max < pc->min) {
		s = config_setting_get_member(g, "max") ?: config_setting_get_member(g, "min");
		return fail(p, s, "%s.max: must be an integer >= 1 and >= min (got max %d, min %d)",
		            where, pc->max, pc->min);
	}
	pc->cooldown = 300;
	if ((r = get_seconds(p, g, where, "cooldown", false, &pc->cooldown)) < 0)
		return r;

	pc->up = (ScaleRule){.stabilization = 0, .max_step = 4, .period = 15};
	pc->down = (ScaleRule){.stabilization = 300, .max_step = 1, .period = 60};
	if ((r = parse_rule(p, g, where, "scale_up", context, &pc->up)) < 0)
		return r;
	if ((r = parse_rule(p, g, where, "scale_down", context, &pc->down)) < 0)
		return r;

	if ((r = parse_on_error(p, g, where, pc)) < 0)
		return r;

	if ((r = parse_stop_signal(p, g, where, &pc->stop_signal)) < 0)
		return r;
	pc->stop_timeout = 300;
	if ((r = get_seconds(p, g, where, "stop_timeout", false, &pc->stop_timeout)) < 0)
		return r;

	return parse_container(p, g, where, context, &pc->container);
}

/* FNV-1a, 64 bit: small, stable across builds and machines, good enough to notice change. */
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static void fnv(uint64_t *h, const void *data, size_t n)
{
	const unsigned char *b = data;
	for (size_t i = 0; i < n; i++) {
		*h ^= b[i];
		*h *= FNV_PRIME;
	}
}

/* Netstring-like "LEN:BYTES," so no two different inputs serialise alike; NULL is "-". */
static void hash_str(uint64_t *h, const char *s)
{
	char len[24];

	if (!s) {
		fnv(h, "-", 1);
		return;
	}
	snprintf(len, sizeof len, "%zu:", strlen(s));
	fnv(h, len, strlen(len));
	fnv(h, s, strlen(s));
	fnv(h, ",", 1);
}

static void hash_field(uint64_t *h, const char *tag, const char *s)
{
	hash_str(h, tag);
	hash_str(h, s);
}

static void hash_strv(uint64_t *h, const char *tag, char *const *v, size_t n)
{
	char count[24];

	hash_str(h, tag);
	snprintf(count, sizeof count, "%zu", n);
	hash_str(h, v ? count : NULL);
	for (size_t i = 0; i < n; i++)
		hash_str(h, v[i]);
}

static void hash_double(uint64_t *h, const char *tag, double d)
{
	char buf[40];
	snprintf(buf, sizeof buf, "%.17g", d);
	hash_field(h, tag, buf);
}

static int cmp_label(const void *a, const void *b, void *keys)
{
	char **k = keys;
	return strcmp(k[*(const size_t *)a], k[*(const size_t *)b]);
}

/* The hash covers exactly what Docker is asked to run and how it is stopped; sizing knobs
 * (min, max, target, ...) are left out so that tuning them never replaces workers. Labels are
 * sorted: their order in the file does not change the container. */
static int pool_hash(PoolConfig *pc)
{
	const ContainerSpec *cs = &pc->container;
	_cleanup_free_ size_t *order = NULL;
	uint64_t h = FNV_OFFSET;
	char buf[32];

	hash_str(&h, "sluice-spec-v1");
	hash_field(&h, "image", cs->image);
	hash_strv(&h, "command", cs->command, cs->n_command);
	hash_strv(&h, "env", cs->env, cs->n_env);
	hash_field(&h, "network", cs->network);
	snprintf(buf, sizeof buf, "%lld", (long long)cs->memory);
	hash_field(&h, "memory", buf);
	hash_double(&h, "cpus", cs->cpus);
	hash_strv(&h, "volumes", cs->volumes, cs->n_volumes);
	order = calloc(cs->n_labels + 1, sizeof(size_t));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < cs->n_labels; i++)
		order[i] = i;
	qsort_r(order, cs->n_labels, sizeof(size_t), cmp_label, cs->label_keys);
	snprintf(buf, sizeof buf, "%zu", cs->n_labels);
	hash_field(&h, "labels", buf);
	for (size_t i = 0; i < cs->n_labels; i++) {
		hash_str(&h, cs->label_keys[order[i]]);
		hash_str(&h, cs->label_values[order[i]]);
	}
	hash_field(&h, "user", cs->user);
	hash_field(&h, "init", cs->init ? "true" : "false");
	hash_field(&h, "stop_signal", pc->stop_signal);
	hash_double(&h, "stop_timeout", pc->stop_timeout);

	snprintf(pc->spec_hash, sizeof pc->spec_hash, "%016llx", (unsigned long long)h);
	return 0;
}

static int parse_pools(Parser *p, const config_setting_t *root, Config *c)
{
	const config_setting_t *l = config_setting_get_member(root, "pools");
	int n, r;

	if (!l)
		return fail(p, root,
		            "missing required key \"pools\" at top level; set pools = ( { name = "
		            "\"...\"; queues = [ ... ]; container: { image = \"...\"; }; } );");
	if (!config_setting_is_list(l))
		return fail(p, l,
		            "pools: must be a list of pool groups, pools = ( { ... }, { ... } ); "
		            "(got %s)",
		            type_name(l));
	n = config_setting_length(l);
	if (n == 0)
		return fail(p, l, "pools: must hold at least one pool (got an empty list)");
	c->pools = calloc((size_t)n, sizeof(PoolConfig));
	if (!c->pools)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		PoolConfig *pc = &c->pools[i];

		c->n_pools = (size_t)i + 1;
		r = parse_pool(p, config_setting_get_elem(l, i), (size_t)i, pc);
		if (r < 0)
			return r;
		for (int j = 0; j < i; j++)
			if (streq(c->pools[j].name, pc->name))
				return fail(p,
				            config_setting_get_member(config_setting_get_elem(l, i),
				                                      "name"),
				            "pools[%d].name: duplicate pool name \"%s\" (first "
				            "defined at %s:%d); names must be unique",
				            i, pc->name, c->pools[j].file, c->pools[j].line);
		if ((r = pool_hash(pc)) < 0)
			return r;
	}
	return 0;
}

static int parse_root(Parser *p, const config_setting_t *root, Config *c)
{
	int r;

	if ((r = check_keys(p, root, top_keys, "at top level")) < 0)
		return r;
	c->interval = 5;
	if ((r = get_seconds(p, root, NULL, "interval", true, &c->interval)) < 0)
		return r;
	if ((r = parse_docker(p, root, c)) < 0)
		return r;
	if ((r = parse_rabbitmq(p, root, c)) < 0)
		return r;
	if ((r = parse_metrics(p, root, c)) < 0)
		return r;
	return parse_pools(p, root, c);
}

/* libconfig's own texts are terse; add what the grammar allows. */
static const char *syntax_hint(const char *text)
{
	if (!text)
		return "";
	if (strstr(text, "syntax error"))
		return "; expected key = value; with groups { }, arrays [ ], lists ( ) and strings "
		       "in double quotes";
	if (strstr(text, "duplicate"))
		return "; each key may appear once per group";
	if (strstr(text, "include"))
		return "; @include paths are relative to the main file's directory";
	return "";
}

static void config_destroyp(config_t **cf)
{
	if (*cf)
		config_destroy(*cf);
}

int config_load(const char *path, Config **ret, char **ret_error)
{
	Parser p = {.path = path};
	_cleanup_(config_destroyp) config_t *cfp = NULL;
	_cleanup_free_ char *dir_copy = NULL;
	Config *c = NULL;
	config_t cf;
	struct stat st;
	int fd, r;

	/* libconfig says only "file I/O error"; find out ourselves why the file cannot be read. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		r = -errno;
	else if (fstat(fd, &st) < 0)
		r = -errno;
	else
		r = S_ISDIR(st.st_mode) ? -EISDIR : 0;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		goto fail_open;

	dir_copy = strdup(path);
	if (!dir_copy) {
		r = -ENOMEM;
		goto fail;
	}
	config_init(&cf);
	cfp = &cf;
	/* @include "x.conf" is found next to the main file, wherever sluiced was started. */
	p.include_dir = dirname(dir_copy);
	config_set_include_dir(&cf, p.include_dir);
	if (!config_read_file(&cf, path)) {
		char file[PATH_MAX];

		if (config_error_type(&cf) == CONFIG_ERR_FILE_IO) {
			r = -EIO;
			goto fail_open;
		}
		if (source_path(&p, config_error_file(&cf), file, sizeof file) < 0)
			snprintf(file, sizeof file, "%s", path);
		if (asprintf(&p.error, "%s:%d: %s%s", file, config_error_line(&cf),
		             config_error_text(&cf), syntax_hint(config_error_text(&cf))) < 0)
			p.error = NULL;
		r = -EINVAL;
		goto fail;
	}

	c = calloc(1, sizeof(Config));
	if (!c) {
		r = -ENOMEM;
		goto fail;
	}
	c->path = strdup(path);
	r = c->path ? parse_root(&p, config_root_setting(&cf), c) : -ENOMEM;
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;

fail_open:
	if (asprintf(&p.error, "%s: cannot open: %s", path, strerror(-r)) < 0)
		p.error = NULL;
fail:
	config_free(c);
	if (!p.error && asprintf(&p.error, "%s: %s", path, strerror(-r)) < 0)
		p.error = NULL;
	*ret_error = p.error;
	return r;
}

static void container_spec_done(ContainerSpec *cs)
{
	free(cs->image);
	strv_free_n(cs->command, cs->n_command);
	strv_free_n(cs->env, cs->n_env);
	free(cs->network);
	strv_free_n(cs->volumes, cs->n_volumes);
	strv_free_n(cs->label_keys, cs->n_labels);
	strv_free_n(cs->label_values, cs->n_labels);
	free(cs->user);
}

Config *config_free(Config *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n_pools; i++) {
		PoolConfig *pc = &c->pools[i];

		free(pc->name);
		free(pc->vhost);
		strv_free_n(pc->queues, pc->n_queues);
		free(pc->stop_signal);
		container_spec_done(&pc->container);
		free(pc->file);
	}
	free(c->pools);
	free(c->path);
	free(c->docker_socket);
	free(c->rmq_url);
	free(c->rmq_user);
	/* The secret should not outlive its Config in freed heap memory. */
	if (c->rmq_password)
		explicit_bzero(c->rmq_password, strlen(c->rmq_password));
	free(c->rmq_password);
	free(c->amqp_url);
	free(c->tls_ca_file);
	free(c->metrics_listen);
	free(c);
	return NULL;
}

const PoolConfig *config_find_pool(const Config *c, const char *name)
{
	if (!c || !name)
		return NULL;
	for (size_t i = 0; i < c->n_pools; i++)
		if (streq(c->pools[i].name, name))
			return &c->pools[i];
	return NULL;
}

const char *count_mode_to_string(CountMode m)
{
	switch (m) {
	case COUNT_READY_UNACKED:
		return "ready+unacked";
	case COUNT_READY:
		return "ready";
	}
	return "unknown";
}

const char *source_kind_to_string(SourceKind s)
{
	switch (s) {
	case SOURCE_MANAGEMENT:
		return "management";
	case SOURCE_AMQP:
		return "amqp";
	}
	return "unknown";
}
