"""A small fault-injecting HTTP proxy for sluice's integration tests (standard library only).

It listens on 127.0.0.1 in front of a real HTTP server (the RabbitMQ management API) and,
depending on its mode, passes requests through or answers them badly:

    pass       forward the request upstream and return the real answer
    500        HTTP 500 with a RabbitMQ-like JSON error body
    401        HTTP 401 with RabbitMQ's "Login failed" body
    garbage    HTTP 200 with a body that is not JSON
    truncated  HTTP 200 with the real upstream body cut in half (a truncated JSON document,
               Content-Length matching the cut body: the HTTP exchange itself is well formed)
    stall      accept, read the request, never answer (until the client gives up, or the mode
               changes, or STALL_MAX seconds), then close
    empty      HTTP 200 with "[]"
    echo       HTTP 500 whose body echoes the request's Authorization header (a misbehaving
               middlebox that reflects credentials into an error message)
    closed     stop listening: connections are refused (the port is bound again on the next
               switch to another mode)

    p = FaultProxy("127.0.0.1", bed.mgmt_port).start()
    p.url            # http://127.0.0.1:<port>, to put in sluice.conf as rabbitmq.url
    p.set_mode("500")
    p.count("500")   # requests answered in that mode
    p.auth_headers   # Authorization headers seen (to prove a secret was actually sent)
    p.stop()

Network rule: binds and connects to 127.0.0.1 only.
"""

import http.client
import http.server
import json
import socket
import threading
import time

MODES = ("pass", "500", "401", "garbage", "truncated", "stall", "empty", "echo", "closed")
STALL_MAX = 30.0
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "content-length", "host"}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, proxy):
        self.proxy = proxy
        super().__init__(addr, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a mode switch takes at once

    def log_message(self, fmt, *args):  # quiet
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else None

    def _send(self, status, body, ctype="application/json"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _upstream(self, body):
        p = self.server.proxy
        conn = http.client.HTTPConnection(p.upstream_host, p.upstream_port,
                                          timeout=p.upstream_timeout)
        try:
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "application/json", resp.read()
        finally:
            conn.close()

    def _handle(self):
        p = self.server.proxy
        body = self._body()
        mode = p.mode
        p._seen(mode, self)
        try:
            if mode == "pass":
                st, ct, data = self._upstream(body)
                self._send(st, data, ct)
            elif mode == "500":
                self._send(500, json.dumps({"error": "internal_error",
                                            "reason": "injected by faultproxy"}))
            elif mode == "401":
                self._send(401, json.dumps({"error": "not_authorized",
                                            "reason": "Login failed"}))
            elif mode == "garbage":
                self._send(200, "<html><body>502 Bad Gateway (not JSON)</body></html>\n",
                           "text/html")
            elif mode == "truncated":
                st, ct, data = self._upstream(body)
                self._send(200, data[:max(1, len(data) // 2)], ct)
            elif mode == "empty":
                self._send(200, "[]")
            elif mode == "echo":
                self._send(500, json.dumps({"error": "bad_request", "reason": "rejected header "
                                            "Authorization: %s" % self.headers.get(
                                                "Authorization", "")}))
            elif mode == "stall":
                # never answer: wait until the mode changes, the client hangs up, or STALL_MAX
                deadline = time.monotonic() + STALL_MAX
                self.connection.settimeout(0.2)
                while p.mode == "stall" and time.monotonic() < deadline and not p._closing:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            break  # the client gave up
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    time.sleep(0.2)
                self.close_connection = True
            else:  # closed, but a connection got in before the socket closed
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class FaultProxy:
    def __init__(self, upstream_host, upstream_port, mode="pass", upstream_timeout=10.0):
        if mode not in MODES:
            raise ValueError("unknown mode %r" % mode)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_timeout = upstream_timeout
        self.mode = mode
        self.port = None
        self.auth_headers = set()
        self.paths = []
        self._counts = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self._closing = False

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _seen(self, mode, handler):
        with self._lock:
            self._counts[mode] = self._counts.get(mode, 0) + 1
            a = handler.headers.get("Authorization")
            if a:
                self.auth_headers.add(a)
            if len(self.paths) < 1000:
                self.paths.append(handler.path)

    def count(self, mode=None):
        """Requests received in MODE (all modes if None)."""
        with self._lock:
            if mode is None:
                return sum(self._counts.values())
            return self._counts.get(mode, 0)

    def _listen(self):
        self._server = _Server(("127.0.0.1", self.port or 0), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def _unlisten(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def start(self):
        if self.mode == "closed":
            # reserve a port now so that url is known; then close it
            self._listen()
            self._unlisten()
        else:
            self._listen()
        return self

    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError("unknown mode %r" % mode)
        old, self.mode = self.mode, mode
        if mode == "closed" and old != "closed":
            self._unlisten()
        elif mode != "closed" and self._server is None:
            for _ in range(50):  # the port may linger for a moment
                try:
                    self._listen()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError("faultproxy: cannot listen on 127.0.0.1:%d again" % self.port)

    def stop(self):
        self._closing = True
        self._unlisten()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


if __name__ == "__main__":
    # manual use: python3 faultproxy.py UPSTREAM_PORT [MODE]; type a mode + Enter to switch
    import sys
    p = FaultProxy("127.0.0.1", int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "pass")
    p.start()
    print(p.url, flush=True)
    for line in sys.stdin:
        if line.strip():
            p.set_mode(line.strip())
            print("mode", p.mode, flush=True)
    p.stop()
