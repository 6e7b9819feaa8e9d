/* SPDX-License-Identifier: MIT */
/* config_load(): the SPEC example, defaults, every class of bad config with its exact
 * FILE:LINE, secrets (inline password permissions, password_file, systemd credentials, never
 * in a message), @include, and the container spec hash. Configs are written to a temp dir. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* -I. comes first in automake's include path and ./config.h is autoconf's; name ours. */
#include "config.h"
#include "../../src/macro.h"

/* Appears in every inline password below; no error message may ever contain it. Digits only,
 * so that it also works as a (wrongly typed) integer password. */
#define SECRET "31415926"

static char tmpdir[] = "/tmp/sluice-test-config-XXXXXX";
static int file_counter;

/* Write CONTENT to a new file in the temp dir with MODE; returns its path (caller frees). */
static char *write_file(const char *name, const char *content, mode_t mode)
{
	char *path;
	FILE *f;

	assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(content, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static char *write_config(const char *content)
{
	char name[64];
	snprintf(name, sizeof name, "test-%d.conf", ++file_counter);
	return write_file(name, content, 0600);
}

static char *fixture(const char *rel)
{
	char *path;
	assert_true(asprintf(&path, "%s/config/%s", FIXTURES, rel) > 0);
	return path;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Replace the first NEEDLE in S by REPL; returns a new string. */
static char *replace(const char *s, const char *needle, const char *repl)
{
	const char *at = strstr(s, needle);
	char *out;

	assert_non_null(at);
	assert_true(asprintf(&out, "%.*s%s%s", (int)(at - s), s, repl, at + strlen(needle)) > 0);
	return out;
}

/* Load a config that must be valid; fail the test with its message otherwise. */
static Config *load_ok(const char *path)
{
	Config *c = NULL;
	char *err = NULL;
	int r = config_load(path, &c, &err);

	if (r < 0)
		fail_msg("config_load(%s) = %d: %s", path, r, err ?: "(no message)");
	assert_non_null(c);
	free(err);
	return c;
}

static Config *load_string_ok(const char *text)
{
	_cleanup_free_ char *path = write_config(text);
	return load_ok(path);
}

/* Load a config that must fail with R, and check the message: "PATH:LINE: " then FRAGMENT,
 * and never the secret. Returns the message (caller frees). */
static char *load_fail(const char *path, const char *expect_file, int line, int r_expected,
                       const char *fragment)
{
	Config *c = NULL;
	char *err = NULL, *prefix;
	int r = config_load(path, &c, &err);

	assert_non_null(err);
	if (r != r_expected)
		fail_msg("expected %d, got %d: %s", r_expected, r, err);
	assert_null(c);
	if (line > 0)
		assert_true(asprintf(&prefix, "%s:%d: ", expect_file, line) > 0);
	else
		assert_true(asprintf(&prefix, "%s: ", expect_file) > 0);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("message does not start with \"%s\": %s", prefix, err);
	if (!strstr(err, fragment))
		fail_msg("message lacks \"%s\": %s", fragment, err);
	if (strstr(err, SECRET))
		fail_msg("message contains the password: %s", err);
	free(prefix);
	return err;
}

static const char minimal_pool[] = "pools = ( { name = \"p\"; queues = [ \"q\" ]; "
                                   "container: { image = \"img\"; }; } );\n";

/* ------------------------------------------------------------------------------------------ */

/* Promise: the example configuration of SPEC.md is accepted and every value arrives as given. */
static void test_spec_example_parses_as_given(void **state)
{
	_cleanup_free_ char *spec_path = fixture("spec-example.conf");
	_cleanup_free_ char *spec = read_all(spec_path);
	_cleanup_free_ char *pwfile = write_file("spec.password", "hunter2-spec\n", 0600);
	_cleanup_free_ char *text = replace(spec, "/etc/sluice/rabbitmq.password", pwfile);
	_cleanup_free_ char *path = write_config(text);
	Config *c = load_ok(path);
	const PoolConfig *p;
	const ContainerSpec *cs;
	static const char *const command[] = {
	    "celery", "-A",       "tasks", "worker", "--loglevel=info", "--prefetch-multiplier=1",
	    "-n",     "{name}@%h"};

	assert_string_equal(c->path, path);
	assert_true(c->interval == 5);
	assert_string_equal(c->docker_socket, "/run/docker.sock");
	assert_string_equal(c->rmq_url, "http://127.0.0.1:15672");
	assert_string_equal(c->rmq_user, "sluice");
	assert_string_equal(c->rmq_password, "hunter2-spec");
	assert_string_equal(c->amqp_url, "amqp://127.0.0.1:5672/");
	assert_true(c->rmq_timeout == 3.0);
	assert_string_equal(c->tls_ca_file, "/etc/ssl/certs/ca.pem");
	assert_true(c->tls_verify);
	assert_string_equal(c->metrics_listen, "127.0.0.1:9687");
	assert_int_equal(c->n_pools, 1);

	p = &c->pools[0];
	assert_string_equal(p->name, "celery");
	assert_string_equal(p->vhost, "/");
	assert_int_equal(p->n_queues, 1);
	assert_string_equal(p->queues[0], "celery");
	assert_int_equal(p->count, COUNT_READY_UNACKED);
	assert_int_equal(p->source, SOURCE_MANAGEMENT);
	assert_true(p->target == 10);
	assert_true(p->activation == 0);
	assert_int_equal(p->min, 0);
	assert_int_equal(p->max, 10);
	assert_true(p->cooldown == 300);
	assert_true(p->up.stabilization == 0);
	assert_int_equal(p->up.max_step, 4);
	assert_true(p->up.period == 15);
	assert_true(p->down.stabilization == 300);
	assert_int_equal(p->down.max_step, 1);
	assert_true(p->down.period == 60);
	assert_int_equal(p->on_error, ON_ERROR_HOLD);
	assert_string_equal(p->stop_signal, "SIGTERM");
	assert_true(p->stop_timeout == 300);
	assert_string_equal(p->file, path);
	assert_int_equal(p->line, 19); /* the "{" of the pool in the SPEC example */
	assert_int_equal(strlen(p->spec_hash), 16);

	cs = &p->container;
	assert_string_equal(cs->image, "celery-demo:latest");
	assert_int_equal(cs->n_command, ELEMENTSOF(command));
	for (size_t i = 0; i < ELEMENTSOF(command); i++)
		assert_string_equal(cs->command[i], command[i]);
	assert_null(cs->command[cs->n_command]);
	assert_int_equal(cs->n_env, 1);
	assert_string_equal(cs->env[0], "CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//");
	assert_null(cs->env[1]);
	assert_string_equal(cs->network, "host");
	assert_int_equal(cs->memory, 512LL * 1024 * 1024);
	assert_true(cs->cpus == 0.5);
	assert_int_equal(cs->n_volumes, 1);
	assert_string_equal(cs->volumes[0], "/srv/app:/app:ro");
	assert_int_equal(cs->n_labels, 1);
	assert_string_equal(cs->label_keys[0], "team");
	assert_string_equal(cs->label_values[0], "data");
	assert_string_equal(cs->user, "1000:1000");
	assert_true(cs->init);

	assert_ptr_equal(config_find_pool(c, "celery"), p);
	assert_null(config_find_pool(c, "nope"));
	config_free(c);
}

/* Promise: the shipped etc/sluice.conf is a valid config (no secrets needed to load it). */
static void test_shipped_example_config_loads(void **state)
{
	_cleanup_free_ char *path = fixture("../../../etc/sluice.conf");
	Config *c = load_ok(path);

	assert_int_equal(c->n_pools, 1);
	assert_string_equal(c->pools[0].name, "celery");
	assert_string_equal(c->pools[0].container.image, "celery-demo:latest");
	config_free(c);
}

/* Promise: every optional key gets the default documented in sluice.conf(5). */
static void test_defaults_applied(void **state)
{
	Config *c = load_string_ok(minimal_pool);
	const PoolConfig *p = &c->pools[0];
	const ContainerSpec *cs = &p->container;

	assert_true(c->interval == 5);
	assert_string_equal(c->docker_socket, "/run/docker.sock");
	assert_string_equal(c->rmq_url, "http://127.0.0.1:15672");
	assert_string_equal(c->rmq_user, "guest");
	assert_string_equal(c->rmq_password, "guest");
	assert_string_equal(c->amqp_url, "amqp://127.0.0.1:5672/");
	assert_true(c->rmq_timeout == 3.0);
	assert_null(c->tls_ca_file);
	assert_true(c->tls_verify);
	assert_null(c->metrics_listen);

	assert_string_equal(p->vhost, "/");
	assert_int_equal(p->count, COUNT_READY_UNACKED);
	assert_int_equal(p->source, SOURCE_MANAGEMENT);
	assert_true(p->target == 10);
	assert_true(p->activation == 0);
	assert_int_equal(p->min, 0);
	assert_int_equal(p->max, 10);
	assert_true(p->cooldown == 300);
	assert_true(p->up.stabilization == 0 && p->up.max_step == 4 && p->up.period == 15);
	assert_true(p->down.stabilization == 300 && p->down.max_step == 1 && p->down.period == 60);
	assert_int_equal(p->on_error, ON_ERROR_HOLD);
	assert_int_equal(p->failure_threshold, 3);
	assert_string_equal(p->stop_signal, "SIGTERM");
	assert_true(p->stop_timeout == 300);
	assert_int_equal(p->line, 1);

	assert_null(cs->command);
	assert_int_equal(cs->n_command, 0);
	assert_null(cs->env);
	assert_null(cs->network);
	assert_int_equal(cs->memory, 0);
	assert_true(cs->cpus == 0);
	assert_null(cs->volumes);
	assert_int_equal(cs->n_labels, 0);
	assert_null(cs->user);
	assert_false(cs->init);
	config_free(c);
}

/* Promise: a partly given scale rule keeps the defaults of the keys not given, durations may be
 * fractional or integers, and the management URL loses its trailing slash. */
static void test_partial_rules_fractions_and_url(void **state)
{
	Config *c = load_string_ok("interval = 0.5;\n"
	                           "rabbitmq: { url = \"https://mq.example:15671/\"; timeout = 2; "
	                           "tls: { verify = false; }; };\n"
	                           "pools = ( { name = \"p\"; queues = [ \"a\", \"b\" ];\n"
	                           "  scale_down: { max_step = 2; };\n"
	                           "  stop_timeout = 2.5; cooldown = 0;\n"
	                           "  container: { image = \"img\"; cpus = 2; }; } );\n");
	const PoolConfig *p = &c->pools[0];

	assert_true(c->interval == 0.5);
	assert_string_equal(c->rmq_url, "https://mq.example:15671");
	assert_true(c->rmq_timeout == 2.0);
	assert_false(c->tls_verify);
	assert_int_equal(p->n_queues, 2);
	assert_true(p->down.stabilization == 300 && p->down.max_step == 2 && p->down.period == 60);
	assert_true(p->stop_timeout == 2.5);
	assert_true(p->cooldown == 0);
	assert_true(p->container.cpus == 2.0);
	config_free(c);
}

/* Promise: source = "amqp" counts ready messages by default (it cannot see unacked ones). */
static void test_amqp_source_defaults_to_ready(void **state)
{
	Config *c =
	    load_string_ok("pools = ( { name = \"p\"; queues = [ \"q\" ]; source = \"amqp\";"
	                   " container: { image = \"img\"; }; } );\n");

	assert_int_equal(c->pools[0].source, SOURCE_AMQP);
	assert_int_equal(c->pools[0].count, COUNT_READY);
	assert_string_equal(count_mode_to_string(c->pools[0].count), "ready");
	assert_string_equal(count_mode_to_string(COUNT_READY_UNACKED), "ready+unacked");
	assert_string_equal(source_kind_to_string(SOURCE_AMQP), "amqp");
	assert_string_equal(source_kind_to_string(SOURCE_MANAGEMENT), "management");
	config_free(c);
}

/* Promise: fallback = N (with or without on_error = "fallback") selects fallback mode. */
static void test_fallback_modes(void **state)
{
	static const char *const variants[] = {
	    "fallback = 2; failure_threshold = 5;",
	    "on_error = \"fallback\"; fallback = 2; failure_threshold = 5;",
	};

	for (size_t i = 0; i < ELEMENTSOF(variants); i++) {
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(
		    asprintf(&text,
		             "pools = ( { name = \"p\"; queues = [ \"q\" ]; min = 1; max = 4; "
		             "%s container: { image = \"img\"; }; } );\n",
		             variants[i]) > 0);
		c = load_string_ok(text);
		assert_int_equal(c->pools[0].on_error, ON_ERROR_FALLBACK);
		assert_int_equal(c->pools[0].fallback, 2);
		assert_int_equal(c->pools[0].failure_threshold, 5);
		config_free(c);
	}
}

/* Promise: stop_signal accepts the listed signals with or without SIG and in any case, and
 * hands Docker the canonical SIG name. */
static void test_stop_signal_normalised(void **state)
{
	static const struct {
		const char *given, *want;
	} cases[] = {
	    {"SIGTERM", "SIGTERM"}, {"TERM", "SIGTERM"}, {"sigquit", "SIGQUIT"},
	    {"INT", "SIGINT"},      {"HUP", "SIGHUP"},   {"USR1", "SIGUSR1"},
	    {"SIGUSR2", "SIGUSR2"}, {"KILL", "SIGKILL"},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(asprintf(&text,
		                     "pools = ( { name = \"p\"; queues = [ \"q\" ]; stop_signal = "
		                     "\"%s\"; container: { image = \"img\"; }; } );\n",
		                     cases[i].given) > 0);
		c = load_string_ok(text);
		assert_string_equal(c->pools[0].stop_signal, cases[i].want);
		config_free(c);
	}
}

/* Promise: memory sizes are binary units with an optional B, or plain bytes. */
static void test_memory_sizes(void **state)
{
	static const struct {
		const char *given;
		int64_t bytes;
	} cases[] = {
	    {"\"512M\"", 512LL << 20},     {"\"1G\"", 1LL << 30},      {"\"8192k\"", 8192LL << 10},
	    {"\"8192K\"", 8192LL << 10},   {"\"512MB\"", 512LL << 20}, {"\"2gb\"", 2LL << 30},
	    {"\"1073741824\"", 1LL << 30}, {"1073741824", 1LL << 30},  {"\"7340032b\"", 7340032},
	    {"8589934592L", 8LL << 30},    {"\"6M\"", 6LL << 20},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(asprintf(&text,
		                     "pools = ( { name = \"p\"; queues = [ \"q\" ]; container: { "
		                     "image = \"img\"; memory = %s; }; } );\n",
		                     cases[i].given) > 0);
		c = load_string_ok(text);
		assert_int_equal(c->pools[0].container.memory, cases[i].bytes);
		config_free(c);
	}
}

/* Promise: labels may be a group of simple keys or an array of "key=value" with dotted keys. */
static void test_labels_forms(void **state)
{
	Config *c = load_string_ok(
	    "pools = ( { name = \"p\"; queues = [ \"q\" ]; container: { image = \"img\";\n"
	    "  labels = [ \"com.example.team=data\", \"empty=\" ]; }; },\n"
	    "  { name = \"p2\"; queues = [ \"q\" ]; container: { image = \"img\";\n"
	    "  labels = { a = \"1\"; b = \"2\"; }; }; } );\n");
	const ContainerSpec *cs = &c->pools[0].container;

	assert_int_equal(cs->n_labels, 2);
	assert_string_equal(cs->label_keys[0], "com.example.team");
	assert_string_equal(cs->label_values[0], "data");
	assert_string_equal(cs->label_keys[1], "empty");
	assert_string_equal(cs->label_values[1], "");
	cs = &c->pools[1].container;
	assert_int_equal(cs->n_labels, 2);
	assert_string_equal(cs->label_keys[1], "b");
	assert_string_equal(cs->label_values[1], "2");
	assert_int_equal(c->pools[1].line, 3);
	config_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Bad configs: each one is its own test case, named after what it proves. */

typedef struct {
	const char *name;
	const char *text;
	int line;
	const char *fragment; /* all fail with -EINVAL */
} BadCase;

/* Line 1: an inline password (the temp files are 0600, so it is allowed). */
#define RMQ "rabbitmq: { user = \"sluice\"; password = \"" SECRET "\"; };\n"
/* Lines 2-4: the head of pool "celery". */
#define POOL_OPEN "pools = ( {\n  name = \"celery\";\n  queues = [ \"celery\" ];\n"
#define CONTAINER "  container: { image = \"img\"; };\n"
#define POOL_CLOSE "} );\n"
#define POOL_WITH(lines) RMQ POOL_OPEN lines CONTAINER POOL_CLOSE
#define CONTAINER_WITH(lines)                                                                      \
	RMQ POOL_OPEN "  container: {\n    image = \"img\";\n" lines "  };\n" POOL_CLOSE
#define GOOD_POOL POOL_OPEN CONTAINER POOL_CLOSE

static const BadCase bad_cases[] = {
    {"syntax error is reported at its line", RMQ "interval = ;\n" GOOD_POOL, 2, "syntax error"},
    {"a key given twice is refused", "interval = 5;\ninterval = 6;\n" GOOD_POOL, 2,
     "duplicate setting name"},
    {"@include of a missing file is refused", "@include \"missing.conf\"\n" GOOD_POOL, 1,
     "cannot open include file"},
    {"unknown top-level key is refused", RMQ "intervall = 5;\n" GOOD_POOL, 2,
     "unknown key \"intervall\" at top level; allowed: interval, docker, rabbitmq, metrics, "
     "pools"},
    {"unknown key in docker is refused", RMQ "docker: { sock = \"/x\"; };\n" GOOD_POOL, 2,
     "unknown key \"sock\" in group docker; allowed: socket"},
    {"unknown key in rabbitmq is refused and its value not shown",
     "rabbitmq: {\n  user = \"guest\";\n  passwd = \"" SECRET "\";\n};\n" GOOD_POOL, 3,
     "unknown key \"passwd\" in group rabbitmq; allowed: url, user, password"},
    {"unknown key in rabbitmq.tls is refused",
     "rabbitmq: { tls: {\n  verfy = false; }; };\n" GOOD_POOL, 2,
     "unknown key \"verfy\" in group rabbitmq.tls; allowed: ca_file, verify"},
    {"unknown key in metrics is refused", RMQ "metrics: { port = 9687; };\n" GOOD_POOL, 2,
     "unknown key \"port\" in group metrics; allowed: listen"},
    {"unknown key in a pool is refused", POOL_WITH("  maxx = 3;\n"), 5,
     "unknown key \"maxx\" in pool \"celery\"; allowed: name, vhost, queues, count"},
    {"unknown key in scale_up is refused",
     POOL_WITH("  scale_up: {\n    stabilization = 1;\n    max_steps = 2;\n  };\n"), 7,
     "unknown key \"max_steps\" in pool \"celery\" scale_up; allowed: stabilization, "
     "max_step, period"},
    {"unknown key in scale_down is refused", POOL_WITH("  scale_down: { cooldown = 2; };\n"), 5,
     "unknown key \"cooldown\" in pool \"celery\" scale_down"},
    {"unknown key in container is refused", CONTAINER_WITH("    mem = \"1G\";\n"), 7,
     "unknown key \"mem\" in pool \"celery\" container; allowed: image, command"},
    {"interval as a string is refused", RMQ "interval = \"5\";\n" GOOD_POOL, 2,
     "interval: must be a number of seconds > 0 and <= 31536000 (got a string)"},
    {"interval of 0 is refused", RMQ "interval = 0;\n" GOOD_POOL, 2,
     "interval: must be a number of seconds > 0"},
    {"an integer given as a float is refused", POOL_WITH("  max = 2.0;\n"), 5,
     "pools[0].max: must be an integer >= 1 and >= min (got a float)"},
    {"max of 0 is refused", POOL_WITH("  max = 0;\n"), 5,
     "pools[0].max: must be an integer >= 1 and >= min (got 0)"},
    {"min above max is refused", POOL_WITH("  min = 5;\n  max = 3;\n"), 6,
     "pools[0].max: must be an integer >= 1 and >= min (got max 3, min 5)"},
    {"negative min is refused", POOL_WITH("  min = -1;\n"), 5,
     "pools[0].min: must be an integer >= 0 (got -1)"},
    {"target of 0 is refused", POOL_WITH("  target = 0;\n"), 5,
     "pools[0].target: must be a number > 0"},
    {"negative activation is refused", POOL_WITH("  activation = -1;\n"), 5,
     "pools[0].activation: must be a number >= 0"},
    {"negative cooldown is refused", POOL_WITH("  cooldown = -5;\n"), 5,
     "pools[0].cooldown: must be a number of seconds >= 0"},
    {"max_step of 0 is refused", POOL_WITH("  scale_up: { max_step = 0; };\n"), 5,
     "pools[0].scale_up.max_step: must be an integer >= 1 (got 0)"},
    {"period of 0 is refused", POOL_WITH("  scale_down: {\n    period = 0;\n  };\n"), 6,
     "pools[0].scale_down.period: must be a number of seconds > 0"},
    {"scale_up that is not a group is refused", POOL_WITH("  scale_up = 4;\n"), 5,
     "pools[0].scale_up: must be a group"},
    {"bad memory string is refused", CONTAINER_WITH("    memory = \"512Q\";\n"), 7,
     "pools[0].container.memory: must be bytes as an integer or a string like \"512M\""},
    {"memory below Docker's minimum is refused", CONTAINER_WITH("    memory = \"1M\";\n"), 7,
     "at least 6M (Docker's minimum) (got \"1M\")"},
    {"memory as a float is refused", CONTAINER_WITH("    memory = 1.5;\n"), 7, "(got a float)"},
    {"cpus of 0 is refused", CONTAINER_WITH("    cpus = 0;\n"), 7,
     "pools[0].container.cpus: must be a number > 0"},
    {"unknown stop signal is refused", POOL_WITH("  stop_signal = \"SIGFOO\";\n"), 5,
     "pools[0].stop_signal: must be one of SIGTERM, SIGINT"},
    {"negative stop_timeout is refused", POOL_WITH("  stop_timeout = -1;\n"), 5,
     "pools[0].stop_timeout: must be a number of seconds >= 0"},
    {"duplicate pool name is refused",
     RMQ "pools = (\n  { name = \"a\"; queues = [ \"q\" ]; container: { image = \"i\"; }; },\n"
         "  { name = \"a\"; queues = [ \"q\" ]; container: { image = \"i\"; }; }\n);\n",
     4, "pools[1].name: duplicate pool name \"a\" (first defined at "},
    {"pool name with a bad first character is refused",
     RMQ "pools = ( {\n  name = \"-bad\";\n  queues = [ \"q\" ];\n" CONTAINER POOL_CLOSE, 3,
     "pools[0].name: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most 40 characters "
     "(got \"-bad\")"},
    {"pool name with a space is refused",
     RMQ "pools = ( {\n  name = \"a b\";\n  queues = [ \"q\" ];\n" CONTAINER POOL_CLOSE, 3,
     "pools[0].name: must match"},
    {"pool name over 40 characters is refused",
     RMQ "pools = ( {\n  name = \"a23456789012345678901234567890123456789012\";\n"
         "  queues = [ \"q\" ];\n" CONTAINER POOL_CLOSE,
     3, "be at most 40 characters"},
    {"missing pool name is refused at the pool's line",
     RMQ "pools = (\n  {\n    queues = [ \"q\" ];\n" CONTAINER POOL_CLOSE, 3,
     "missing required key \"name\" in pools[0]"},
    {"missing image is refused at the container's line",
     RMQ POOL_OPEN "  container: {\n    network = \"host\";\n  };\n" POOL_CLOSE, 5,
     "missing required key \"image\" in pool \"celery\" container"},
    {"image of the wrong type is refused",
     RMQ POOL_OPEN "  container: {\n    image = 5;\n  };\n" POOL_CLOSE, 6,
     "pools[0].container.image: must be a string (got an integer)"},
    {"user of the wrong type is refused", CONTAINER_WITH("    user = 1000;\n"), 7,
     "pools[0].container.user: must be a string (got an integer)"},
    {"missing container is refused at the pool's line", RMQ POOL_OPEN "  max = 3;\n" POOL_CLOSE, 2,
     "missing required key \"container\" in pool \"celery\""},
    {"missing queues is refused at the pool's line",
     RMQ "pools = ( {\n  name = \"celery\";\n" CONTAINER POOL_CLOSE, 2,
     "missing required key \"queues\" in pool \"celery\""},
    {"empty queues is refused",
     RMQ "pools = ( {\n  name = \"celery\";\n  queues = [ ];\n" CONTAINER POOL_CLOSE, 4,
     "pools[0].queues: must be a non-empty array of strings"},
    {"empty queue name is refused",
     RMQ "pools = ( {\n  name = \"celery\";\n  queues = [ \"a\", \"\" ];\n" CONTAINER POOL_CLOSE, 4,
     "pools[0].queues[1]: must be a non-empty string"},
    {"a queue listed twice is refused",
     RMQ "pools = ( {\n  name = \"celery\";\n  queues = [ \"a\", \"a\" ];\n" CONTAINER POOL_CLOSE,
     4, "queue \"a\" is listed twice"},
    {"queues as a string is refused",
     RMQ "pools = ( {\n  name = \"celery\";\n  queues = \"celery\";\n" CONTAINER POOL_CLOSE, 4,
     "pools[0].queues: must be an array of strings"},
    {"bad count is refused", POOL_WITH("  count = \"unacked\";\n"), 5,
     "pools[0].count: must be \"ready+unacked\" or \"ready\" (got \"unacked\")"},
    {"bad source is refused", POOL_WITH("  source = \"http\";\n"), 5,
     "pools[0].source: must be \"management\" or \"amqp\""},
    {"ready+unacked with source amqp is refused",
     POOL_WITH("  source = \"amqp\";\n  count = \"ready+unacked\";\n"), 6,
     "\"ready+unacked\" is not available with source = \"amqp\""},
    {"fallback above max is refused", POOL_WITH("  max = 3;\n  fallback = 5;\n"), 6,
     "pools[0].fallback: must be an integer in [min, max] = [0, 3] (got 5)"},
    {"fallback below min is refused", POOL_WITH("  min = 2;\n  fallback = 1;\n"), 6,
     "pools[0].fallback: must be an integer in [min, max] = [2, 10] (got 1)"},
    {"on_error hold together with fallback is refused",
     POOL_WITH("  on_error = \"hold\";\n  fallback = 1;\n"), 6,
     "on_error = \"hold\" and fallback are both set"},
    {"on_error fallback without fallback is refused", POOL_WITH("  on_error = \"fallback\";\n"), 5,
     "needs fallback = N"},
    {"unknown on_error is refused", POOL_WITH("  on_error = \"zero\";\n"), 5,
     "pools[0].on_error: must be \"hold\" or \"fallback\" (got \"zero\")"},
    {"failure_threshold without fallback is refused", POOL_WITH("  failure_threshold = 2;\n"), 5,
     "only applies with fallback = N"},
    {"failure_threshold of 0 is refused", POOL_WITH("  fallback = 1;\n  failure_threshold = 0;\n"),
     6, "pools[0].failure_threshold: must be an integer >= 1 (got 0)"},
    {"env entry without = is refused",
     CONTAINER_WITH("    env = [ \"A=1\",\n            \"BROKEN\" ];\n"), 8,
     "pools[0].container.env[1]: must be \"NAME=value\" with a non-empty NAME (got \"BROKEN\")"},
    {"command element of the wrong type is refused",
     CONTAINER_WITH("    command = ( \"celery\", 5 );\n"), 7,
     "pools[0].container.command[1]: must be a non-empty string (got an integer)"},
    {"relative volume source is refused", CONTAINER_WITH("    volumes = [ \"app:/app\" ];\n"), 7,
     "pools[0].container.volumes[0]: must be \"/host/path:/container/path\""},
    {"volume with bad options is refused", CONTAINER_WITH("    volumes = [ \"/a:/b:rx\" ];\n"), 7,
     "(got \"/a:/b:rx\")"},
    {"volume with both ro and rw is refused",
     CONTAINER_WITH("    volumes = [ \"/a:/b:ro,rw\" ];\n"), 7, "volumes[0]: must be"},
    {"a label in sluice's namespace is refused",
     CONTAINER_WITH("    labels = [ \"io.sluice.pool=other\" ];\n"), 7,
     "key \"io.sluice.pool\" is reserved"},
    {"a label that is not a string is refused", CONTAINER_WITH("    labels = { team = 5; };\n"), 7,
     "pools[0].container.labels.team: must be a string (got an integer)"},
    {"init that is not a boolean is refused", CONTAINER_WITH("    init = \"yes\";\n"), 7,
     "pools[0].container.init: must be true or false (got a string)"},
    {"pools that is a group is refused", RMQ "pools = { name = \"x\"; };\n", 2,
     "pools: must be a list of pool groups"},
    {"empty pools is refused", RMQ "pools = ( );\n", 2, "pools: must hold at least one pool"},
    {"missing pools is refused", RMQ, 1, "missing required key \"pools\" at top level"},
    {"password and password_file together are refused",
     "rabbitmq: {\n  user = \"u\";\n  password = \"" SECRET "\";\n"
     "  password_file = \"/etc/x\";\n};\n" GOOD_POOL,
     4, "rabbitmq: password and password_file are both set; use only one"},
    {"a password of the wrong type is refused without showing it",
     "rabbitmq: {\n  user = \"u\";\n  password = " SECRET ";\n};\n" GOOD_POOL, 3,
     "rabbitmq.password: must be a string (got an integer)"},
    {"an unreadable password file is refused, naming the file",
     "rabbitmq: {\n  user = \"u\";\n  password_file = \"/nonexistent/pw\";\n};\n" GOOD_POOL, 3,
     "rabbitmq.password_file: cannot read \"/nonexistent/pw\": No such file or directory"},
    {"a relative password file is refused",
     "rabbitmq: {\n  user = \"u\";\n  password_file = \"pw\";\n};\n" GOOD_POOL, 3,
     "rabbitmq.password_file: must be an absolute path"},
    {"a user other than guest needs a password",
     "\nrabbitmq: {\n  user = \"sluice\";\n};\n" GOOD_POOL, 2,
     "rabbitmq: no password for user \"sluice\""},
    {"a non-http management URL is refused", "rabbitmq: {\n  url = \"ftp://host\";\n};\n" GOOD_POOL,
     2, "rabbitmq.url: must be an http:// or https:// URL"},
    {"credentials in the management URL are refused and not shown",
     "rabbitmq: {\n  url = \"http://u:" SECRET "@host:15672\";\n};\n" GOOD_POOL, 2,
     "rabbitmq.url: must not carry credentials"},
    {"a bad amqp_url scheme is refused",
     "rabbitmq: {\n  amqp_url = \"http://host:5672/\";\n};\n" GOOD_POOL, 2,
     "rabbitmq.amqp_url: must be an amqp:// or amqps:// URL"},
    {"a timeout of 0 is refused", "rabbitmq: {\n  timeout = 0;\n};\n" GOOD_POOL, 2,
     "rabbitmq.timeout: must be a number of seconds > 0"},
    {"tls.verify as a string is refused",
     "rabbitmq: { tls: {\n  verify = \"no\"; }; };\n" GOOD_POOL, 2,
     "rabbitmq.tls.verify: must be true or false (got a string)"},
    {"metrics.listen without a port is refused",
     RMQ "metrics: {\n  listen = \"127.0.0.1\";\n};\n" GOOD_POOL, 3,
     "metrics.listen: must be \"HOST:PORT\""},
    {"metrics.listen with a port out of range is refused",
     RMQ "metrics: {\n  listen = \"127.0.0.1:70000\";\n};\n" GOOD_POOL, 3,
     "(got \"127.0.0.1:70000\")"},
    {"metrics.listen with an unbracketed IPv6 address is refused",
     RMQ "metrics: {\n  listen = \"::1:9687\";\n};\n" GOOD_POOL, 3, "[IPv6]"},
    {"a metrics group without listen is refused", RMQ "metrics: { };\n" GOOD_POOL, 2,
     "missing required key \"listen\" in group metrics"},
    {"a relative docker socket is refused",
     RMQ "docker: {\n  socket = \"docker.sock\";\n};\n" GOOD_POOL, 3,
     "docker.socket: must be an absolute path"},
};

static void test_bad_config(void **state)
{
	const BadCase *bc = *state;
	_cleanup_free_ char *path = write_config(bc->text);
	_cleanup_free_ char *err = load_fail(path, path, bc->line, -EINVAL, bc->fragment);
}

/* ------------------------------------------------------------------------------------------ */

/* Promise: an inline password in a world-readable file is refused with -EACCES and a message
 * that says how to fix it, and accepted once the file is 0600. */
static void test_inline_password_world_readable_refused(void **state)
{
	_cleanup_free_ char *text = NULL, *path = NULL, *err = NULL, *want = NULL;
	Config *c;

	assert_true(asprintf(&text, "rabbitmq: {\n  user = \"u\";\n  password = \"%s\";\n};\n%s",
	                     SECRET, minimal_pool) > 0);
	path = write_file("world.conf", text, 0644);
	err = load_fail(path, path, 3, -EACCES, "rabbitmq.password is set inline but ");
	assert_true(asprintf(&want,
	                     "%s:3: rabbitmq.password is set inline but %s is world-readable; "
	                     "chmod o-r %s or use password_file / LoadCredential=rabbitmq-password",
	                     path, path, path) > 0);
	assert_string_equal(err, want);

	assert_int_equal(chmod(path, 0640), 0);
	c = load_ok(path);
	assert_string_equal(c->rmq_password, SECRET);
	config_free(c);
}

/* Promise: the world-readable check looks at the file where the password is set, which may be
 * an included file. */
static void test_inline_password_in_included_file(void **state)
{
	_cleanup_free_ char *inc = NULL, *path = NULL, *err = NULL, *text = NULL;
	Config *c;

	inc = write_file("secret.inc", "rabbitmq: { user = \"u\"; password = \"" SECRET "\"; };\n",
	                 0604);
	assert_true(asprintf(&text, "# main\n@include \"secret.inc\"\n%s", minimal_pool) > 0);
	path = write_file("with-secret-include.conf", text, 0600);
	err = load_fail(path, inc, 1, -EACCES, "is world-readable; chmod o-r ");

	assert_int_equal(chmod(inc, 0600), 0);
	assert_int_equal(chmod(path, 0644), 0); /* the main file holds no secret */
	c = load_ok(path);
	assert_string_equal(c->rmq_password, SECRET);
	config_free(c);
}

/* Promise: credentials inside amqp_url count as an inline password. */
static void test_amqp_url_password_world_readable_refused(void **state)
{
	_cleanup_free_ char *path = NULL, *err = NULL;

	path = write_file("amqp-world.conf",
	                  "rabbitmq: {\n  amqp_url = \"amqp://u:" SECRET "@host:5672/\";\n};\n"
	                  "pools = ( { name = \"p\"; queues = [ \"q\" ]; container: { image = "
	                  "\"img\"; }; } );\n",
	                  0644);
	err = load_fail(path, path, 2, -EACCES, "a password in rabbitmq.amqp_url is set inline");
}

/* Promise: password_file is read (first line, newline stripped) and an empty one refused. */
static void test_password_file(void **state)
{
	static const struct {
		const char *content, *want;
	} cases[] = {
	    {"s3cret\n", "s3cret"},
	    {"s3cret", "s3cret"},
	    {"s3cret\r\nsecond line\n", "s3cret"},
	    {"with spaces inside \n", "with spaces inside "},
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *pw = write_file("pw", cases[i].content, 0600);
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(asprintf(&text,
		                     "rabbitmq: { user = \"u\"; password_file = \"%s\"; };\n%s", pw,
		                     minimal_pool) > 0);
		c = load_string_ok(text);
		assert_string_equal(c->rmq_password, cases[i].want);
		config_free(c);
	}

	{
		_cleanup_free_ char *pw = write_file("pw-empty", "\n", 0600);
		_cleanup_free_ char *text = NULL, *path = NULL, *err = NULL;

		assert_true(asprintf(&text,
		                     "rabbitmq: { user = \"u\";\n  password_file = \"%s\"; };\n%s",
		                     pw, minimal_pool) > 0);
		path = write_config(text);
		err = load_fail(path, path, 2, -EINVAL, "its first line is empty");
	}
}

/* Promise: with neither password nor password_file, the systemd credential rabbitmq-password
 * is used; without it only user guest falls back to password guest. */
static void test_credentials_directory(void **state)
{
	_cleanup_free_ char *dir = NULL, *cred = NULL, *path = NULL, *err = NULL;
	Config *c;

	assert_true(asprintf(&dir, "%s/creds", tmpdir) > 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);

	/* The directory exists but holds no such credential: as if it were unset. */
	c = load_string_ok(minimal_pool);
	assert_string_equal(c->rmq_password, "guest");
	config_free(c);
	path = write_config("rabbitmq: {\n  user = \"sluice\";\n};\n"
	                    "pools = ( { name = \"p\"; queues = [ \"q\" ]; container: { image = "
	                    "\"img\"; }; } );\n");
	err = load_fail(path, path, 1, -EINVAL, "no password for user \"sluice\"");

	cred = write_file("creds/rabbitmq-password", "from-credential\n", 0400);
	c = load_ok(path);
	assert_string_equal(c->rmq_user, "sluice");
	assert_string_equal(c->rmq_password, "from-credential");
	config_free(c);

	/* An explicit password_file wins over the credential. */
	{
		_cleanup_free_ char *pw = write_file("pw-explicit", "explicit\n", 0600);
		_cleanup_free_ char *text = NULL;

		assert_true(asprintf(&text,
		                     "rabbitmq: { user = \"u\"; password_file = \"%s\"; };\n%s", pw,
		                     minimal_pool) > 0);
		c = load_string_ok(text);
		assert_string_equal(c->rmq_password, "explicit");
		config_free(c);
	}
	assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
}

/* Promise: @include is resolved next to the main file, whatever the working directory, and
 * the included pool remembers the file it came from. */
static void test_include_relative_to_config(void **state)
{
	_cleanup_free_ char *path = fixture("include/main.conf");
	_cleanup_free_ char *inc = fixture("include/celery-pool.inc");
	char cwd[4096];
	Config *c;

	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir("/"), 0);
	c = load_ok(path);
	assert_int_equal(chdir(cwd), 0);

	assert_true(c->interval == 2);
	assert_int_equal(c->n_pools, 1);
	assert_string_equal(c->pools[0].name, "included");
	assert_int_equal(c->pools[0].n_queues, 2);
	assert_string_equal(c->pools[0].file, inc);
	assert_int_equal(c->pools[0].line, 2);
	config_free(c);
}

/* Promise: an error inside an included file names that file and its line. */
static void test_include_error_names_included_file(void **state)
{
	_cleanup_free_ char *path = fixture("include/bad-main.conf");
	_cleanup_free_ char *inc = fixture("include/bad-pool.inc");
	_cleanup_free_ char *spath = fixture("include/syntax-main.conf");
	_cleanup_free_ char *sinc = fixture("include/syntax.inc");
	_cleanup_free_ char *err = NULL, *serr = NULL;

	err = load_fail(path, inc, 4, -EINVAL,
	                "pools[0].max: must be an integer >= 1 and >= min "
	                "(got 0)");
	serr = load_fail(spath, sinc, 2, -EINVAL, "syntax error");
}

/* Promise: a missing, unreadable or directory config path is refused with FILE: and why. */
static void test_unopenable_config(void **state)
{
	_cleanup_free_ char *missing = NULL, *err1 = NULL, *err2 = NULL;

	assert_true(asprintf(&missing, "%s/does-not-exist.conf", tmpdir) > 0);
	err1 = load_fail(missing, missing, 0, -ENOENT, "cannot open: No such file or directory");
	assert_true(strlen(err1) == strlen(missing) + strlen(": cannot open: No such file or "
	                                                     "directory"));
	err2 = load_fail(tmpdir, tmpdir, 0, -EISDIR, "cannot open: Is a directory");

	/* root reads anything, so the permission case only means something for other users */
	if (geteuid() != 0) {
		_cleanup_free_ char *path = write_file("unreadable.conf", minimal_pool, 0000);
		_cleanup_free_ char *err3 =
		    load_fail(path, path, 0, -EACCES, "cannot open: Permission denied");
	}
}

/* Promise: spec_hash is 16 lowercase hex digits, the same for the same container, different
 * when what Docker runs changes, and unchanged by sizing knobs (min, max, target, ...). */
static void test_spec_hash(void **state)
{
	static const char base[] =
	    "pools = ( { name = \"p\"; queues = [ \"q\" ]; %s\n"
	    "  container: { image = \"%s\"; command = [ %s ]; env = [ %s ];\n"
	    "    labels = { %s }; %s }; } );\n";
	static const struct {
		const char *pool, *image, *command, *env, *labels, *extra;
		bool same;
	} variants[] = {
	    /* [0] is the reference */
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";", "", true},
	    {"max = 50; min = 1; target = 3; activation = 2; cooldown = 10;", "img:1",
	     "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";", "", true},
	    {"scale_up: { max_step = 9; }; on_error = \"hold\";", "img:1", "\"celery\", \"worker\"",
	     "\"A=1\"", "a = \"1\"; b = \"2\";", "", true},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "b = \"2\"; a = \"1\";", "", true},
	    {"", "img:2", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";", "", false},
	    {"", "img:1", "\"celery\", \"beat\"", "\"A=1\"", "a = \"1\"; b = \"2\";", "", false},
	    {"", "img:1", "\"celeryworker\"", "\"A=1\"", "a = \"1\"; b = \"2\";", "", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=2\"", "a = \"1\"; b = \"2\";", "", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\", \"B=1\"", "a = \"1\"; b = \"2\";", "",
	     false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"3\";", "", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "memory = \"1G\";", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "cpus = 1.5;", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "network = \"host\";", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "volumes = [ \"/a:/b\" ];", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "user = \"1000\";", false},
	    {"", "img:1", "\"celery\", \"worker\"", "\"A=1\"", "a = \"1\"; b = \"2\";",
	     "init = true;", false},
	    {"stop_signal = \"SIGINT\";", "img:1", "\"celery\", \"worker\"", "\"A=1\"",
	     "a = \"1\"; b = \"2\";", "", false},
	    {"stop_timeout = 30;", "img:1", "\"celery\", \"worker\"", "\"A=1\"",
	     "a = \"1\"; b = \"2\";", "", false},
	};
	char ref[17] = "";

	for (size_t i = 0; i < ELEMENTSOF(variants); i++) {
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(asprintf(&text, base, variants[i].pool, variants[i].image,
		                     variants[i].command, variants[i].env, variants[i].labels,
		                     variants[i].extra) > 0);
		c = load_string_ok(text);
		assert_int_equal(strlen(c->pools[0].spec_hash), 16);
		assert_int_equal(strspn(c->pools[0].spec_hash, "0123456789abcdef"), 16);
		if (i == 0)
			memcpy(ref, c->pools[0].spec_hash, sizeof ref);
		else if (variants[i].same)
			assert_string_equal(c->pools[0].spec_hash, ref);
		else if (streq(c->pools[0].spec_hash, ref))
			fail_msg("variant %zu: hash did not change", i);
		config_free(c);
	}

	/* Same input twice, in another file: same hash (nothing depends on the path or time). */
	{
		_cleanup_free_ char *text = NULL;
		Config *c;

		assert_true(asprintf(&text, base, variants[0].pool, variants[0].image,
		                     variants[0].command, variants[0].env, variants[0].labels,
		                     variants[0].extra) > 0);
		c = load_string_ok(text);
		assert_string_equal(c->pools[0].spec_hash, ref);
		config_free(c);
	}
}

/* ------------------------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	/* The tests decide when a credential is present. */
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

static int group_teardown(void **state)
{
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
	    cmocka_unit_test(test_spec_example_parses_as_given),
	    cmocka_unit_test(test_shipped_example_config_loads),
	    cmocka_unit_test(test_defaults_applied),
	    cmocka_unit_test(test_partial_rules_fractions_and_url),
	    cmocka_unit_test(test_amqp_source_defaults_to_ready),
	    cmocka_unit_test(test_fallback_modes),
	    cmocka_unit_test(test_stop_signal_normalised),
	    cmocka_unit_test(test_memory_sizes),
	    cmocka_unit_test(test_labels_forms),
	    cmocka_unit_test(test_inline_password_world_readable_refused),
	    cmocka_unit_test(test_inline_password_in_included_file),
	    cmocka_unit_test(test_amqp_url_password_world_readable_refused),
	    cmocka_unit_test(test_password_file),
	    cmocka_unit_test(test_credentials_directory),
	    cmocka_unit_test(test_include_relative_to_config),
	    cmocka_unit_test(test_include_error_names_included_file),
	    cmocka_unit_test(test_unopenable_config),
	    cmocka_unit_test(test_spec_hash),
	};
	struct CMUnitTest tests[ELEMENTSOF(fixed) + ELEMENTSOF(bad_cases)];
	size_t n = 0;

	for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
		tests[n++] = fixed[i];
	/* One test case per bad config, named after the promise it proves. */
	for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++)
		tests[n++] = (struct CMUnitTest){
		    .name = bad_cases[i].name,
		    .test_func = test_bad_config,
		    .initial_state = (void *)&bad_cases[i],
		};
	return _cmocka_run_group_tests("config", tests, n, group_setup, group_teardown);
}
