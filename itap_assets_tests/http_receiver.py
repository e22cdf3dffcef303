"""A real HTTP receiver on 127.0.0.1 for the delivery tests, scripted per request."""

from __future__ import annotations

import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP receiver in a thread: records every POST, answers from a per-path queue of actions (a status code,
    or "kill": SIGKILL the process in `victim` before answering), then 200 (webhook) or 202 (PagerDuty)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.actions: dict[str, list[int | str]] = {"/hook": [], "/pd": []}
        self.victim: int | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                queue = receiver.actions[self.path]
                action = queue.pop(0) if queue else (200 if self.path == "/hook" else 202)
                receiver.requests.append({"path": self.path, "key": self.headers["Idempotency-Key"],
                                          "body": body.decode(), "answer": action})
                if action == "kill":  # the delivering process dies with this request in flight
                    os.kill(receiver.victim, signal.SIGKILL)
                    self.close_connection = True
                    return
                self.send_response(action)
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}' if action < 400 else b'{"error": "nope"}')

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def accepted(self, path: str) -> list[dict]:
        """Requests the receiver took in: answered 2xx, or processed while their sender died."""
        return [r for r in self.requests if r["path"] == path and (r["answer"] == "kill" or r["answer"] < 300)]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
