/* The HTTP front end of `altmoe serve`: a libmicrohttpd daemon with a thread pool, each thread
 * running its own epoll loop. It matches routes, enforces the body size cap, the content type
 * and the admin token before reading a body, assigns request ids, and writes one access log
 * line and the request metrics per request. Handlers live in api/. */
#ifndef ALTMOE_SERVER_HTTP_H
#define ALTMOE_SERVER_HTTP_H

#include "api/api.h"
#include "config/config.h"
#include "core/error.h"

typedef struct ams_http ams_http;

/* Binds cfg->listen:cfg->port and starts cfg->threads worker threads. api is borrowed until
 * ams_http_stop(). The caller frees the result with ams_http_stop(). */
amc_status ams_http_start(ams_http **out, const amcfg_config *cfg, ama_ctx *api,
                          amc_error *err);

/* Starts the shutdown: requests already received continue, new requests get 503 busy, and
 * every response closes its connection. */
void ams_http_quiesce(ams_http *http);

/* Waits until no request is in flight or timeout_ms passes; returns the number of requests
 * still in flight (0 when idle). */
int ams_http_wait_idle(ams_http *http, long timeout_ms);

/* Stops the daemon, closing every connection, and frees http. NULL is allowed. */
void ams_http_stop(ams_http *http);

#endif
