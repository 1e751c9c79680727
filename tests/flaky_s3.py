"""A fault-injecting HTTP proxy in front of a real S3 server (moto), for the read-retry tests.

Every request is forwarded unchanged; GETs of object keys are answered by the proxy instead
while a fault applies: the first `transient` GETs of each key get S3's 503 SlowDown (what a
throttled or briefly unavailable store returns), or, with `transient_total`, the first that many
GETs of any key; keys in `gone` always get 404 NoSuchKey (an object deleted after the dataset
was listed). With `latency_s`, every request of an object waits that long before it is
answered, as from a store far away, and the proxy keeps the most object requests it had in
flight at once (`most_in_flight`)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERROR = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
          '<Key>{key}</Key></Error>')


class FlakyS3Proxy:
    def __init__(self, upstream: str, transient: int = 0, gone: tuple = (), transient_answer=None,
                 transient_total: int = 0, latency_s: float = 0.0):
        self.upstream = upstream
        self.latency_s = latency_s
        self.in_flight = self.most_in_flight = 0
        self.transient_answer = transient_answer or (503, "SlowDown", "Please reduce your request rate.")
        # Faults apply while armed: a test can let the driver list and sample the data first,
        # then arm, so that only Ray Data's read tasks meet them.
        self.armed = True
        self.transient = transient
        self.transient_total = transient_total
        self.gone = set(gone)
        self.gets = Counter()      # key -> GETs seen
        self.injected = Counter()  # key -> faults answered
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FlakyS3Proxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _is_object(target: str) -> bool:
        """A request of an object's key, not a listing or a bucket call."""
        url = urlsplit(target)
        return not url.query and url.path.lstrip("/").count("/") >= 1

    def _fault(self, method: str, target: str):
        key = urlsplit(target).path.lstrip("/")
        if not self.armed or method != "GET" or not self._is_object(target):  # listings, bucket calls pass
            return None
        with self._lock:
            self.gets[key] += 1
            if key.rsplit("/", 1)[-1] in self.gone:
                self.injected[key] += 1
                return 404, "NoSuchKey", "The specified key does not exist."
            if self.gets[key] <= self.transient or sum(self.injected.values()) < self.transient_total:
                self.injected[key] += 1
                return self.transient_answer
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not proxy._is_object(self.path):
                    self._answer(body)
                    return
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                try:
                    time.sleep(proxy.latency_s)
                    self._answer(body)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _answer(self, body: bytes) -> None:
                fault = proxy._fault(self.command, self.path)
                if fault:
                    status, code, message = fault
                    payload = _ERROR.format(code=code, message=message, key=self.path).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                conn.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                # HEAD answers carry the object's size, not the (empty) body's.
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        return Handler
