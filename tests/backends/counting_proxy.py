"""A tiny HTTP proxy on 127.0.0.1 that counts what reaches the LLM server.

Tests put it in front of the real vLLM server to see, at the server side, how
many times each prompt was sent (double billing), which headers arrived, and
to play a server that goes away (`stop()`), fails for a while (`fail_next`)
or demands an API key like a hosted endpoint (`require_authorization`).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.prompts: collections.Counter[str] = collections.Counter()
        self.sent_at: list[float] = []  # time.time() of each counted prompt, in arrival order
        self.authorization: list[str] = []
        self.fail_next = 0
        self.require_authorization: str | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=120.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def total(self) -> int:
        return sum(self.prompts.values())

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.authorization.append(self.headers.get("Authorization", ""))
                    if proxy.fail_next > 0:
                        proxy.fail_next -= 1
                        failing = True
                    else:
                        failing = False
                        proxy.prompts[json.dumps(json.loads(body)["messages"], sort_keys=True)] += 1
                        proxy.sent_at.append(time.time())
                if proxy.require_authorization and self.headers.get("Authorization") != proxy.require_authorization:
                    self._reply(401, b'{"error": {"message": "Incorrect API key provided"}}')
                    return
                if failing:
                    self._reply(503, b'{"error": {"message": "overloaded, try again"}}')
                    return
                upstream = proxy._http.post(
                    proxy.upstream + self.path, content=body, headers={"Content-Type": "application/json"}
                )
                self._reply(upstream.status_code, upstream.content)

            def do_GET(self) -> None:  # noqa: N802
                upstream = proxy._http.get(proxy.upstream + self.path)
                self._reply(upstream.status_code, upstream.content)

        return Handler
