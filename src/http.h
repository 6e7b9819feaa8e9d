/* SPDX-License-Identifier: MIT */
/* Asynchronous HTTP: one curl multi handle glued into the sd-event loop (the pattern of
 * systemd's src/import/curl-util.c). Requests never block; completion calls back from the
 * loop. Used for the RabbitMQ management API (TCP, TLS) and the Docker Engine socket
 * (CURLOPT_UNIX_SOCKET_PATH). Verbose output and credentials never reach any log. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct Http Http;

typedef struct {
	const char *method;      /* "GET" (default if NULL), "POST", "DELETE", "HEAD" */
	const char *url;         /* full URL; for a Unix socket e.g. "http://docker/v1.41/_ping" */
	const char *unix_socket; /* NULL for TCP */
	const char *body;        /* request body (sent as application/json) or NULL; copied */
	const char *user;        /* basic auth, or NULL */
	const char *password;
	const char *ca_file; /* NULL = system CA store */
	bool insecure;       /* true = do not verify TLS peer/host (explicit opt-out only) */
	double timeout;      /* total seconds; <= 0 means 30 s */
	size_t max_body;     /* response size limit; 0 = 4 MiB. Larger responses fail -EMSGSIZE */
} HttpRequest;

typedef struct {
	int error;              /* 0 or -errno: -ETIMEDOUT, -ECONNREFUSED, -ENOENT (no socket),
	                           -EMSGSIZE (body too large), -EIO (other transport error) */
	const char *error_text; /* short human text for error != 0 (never contains secrets) */
	long status;            /* HTTP status when error == 0 */
	const char *body;       /* NUL-terminated response body (may be "") */
	size_t body_len;
	const char *api_version; /* value of the "Api-Version" response header, or NULL */
	double elapsed;          /* seconds from submit to completion */
} HttpResponse;

/* Called once per request, from the event loop. R and its strings live only during the call. */
typedef void (*HttpCallback)(const HttpResponse *r, void *userdata);

int http_new(sd_event *e, Http **ret);

/* Frees the handle; in-flight requests are aborted without calling their callbacks. */
Http *http_free(Http *h);

/* Queue a request. Returns 0, or -errno if it could not be queued (callback not called). */
int http_submit(Http *h, const HttpRequest *req, HttpCallback cb, void *userdata);

/* Abort, without calling back, every request submitted with USERDATA (for owners that go
 * away before their requests complete, e.g. docker_free()). Returns how many were aborted. */
size_t http_cancel(Http *h, void *userdata);

/* Number of requests queued or in flight. */
size_t http_in_flight(const Http *h);

/* Requests submitted since http_new() (for the per-tick request count in logs and metrics). */
uint64_t http_requests_total(const Http *h);

/* Percent-encode S for a URL path segment or query value (e.g. vhost "/" -> "%2F"). */
char *http_escape(const char *s);
