"""A local stand-in for the Hugging Face hub on 127.0.0.1 (point HF_ENDPOINT at `url`).

It serves one model folder as a repository and records every request, so a test can count the
requests for weight files.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path


class FakeHub:
    """Serves one model folder as a hub repo on 127.0.0.1; counts requests per file."""

    def __init__(self, repo_id, folder):
        self.repo_id, self.folder = repo_id, Path(folder)
        self.requests = []  # (method, path)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head):
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path))
                sha = "0" * 40
                api = f"/api/models/{hub.repo_id}"
                if path in (api, f"{api}/revision/main"):
                    sib = [
                        {"rfilename": p.name, "size": p.stat().st_size}
                        for p in sorted(hub.folder.iterdir())
                    ]
                    body = json.dumps(
                        {
                            "id": hub.repo_id,
                            "modelId": hub.repo_id,
                            "sha": sha,
                            "siblings": sib,
                            "private": False,
                        }
                    ).encode()
                    return self._send(200, body, {"Content-Type": "application/json"}, head)
                prefix = f"/{hub.repo_id}/resolve/"
                if path.startswith(prefix):
                    name = path[len(prefix) :].split("/", 1)[1]
                    f = hub.folder / name
                    if not f.is_file():
                        return self._send(
                            404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head
                        )
                    data = f.read_bytes()
                    return self._send(
                        200,
                        data,
                        {
                            "X-Repo-Commit": sha,
                            "ETag": '"' + hashlib.sha256(data).hexdigest() + '"',
                        },
                        head,
                    )
                return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)

            def do_GET(self):
                self._route(False)

            def do_HEAD(self):
                self._route(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def weight_requests(self):
        return [r for r in self.requests if r[1].endswith((".safetensors", ".bin"))]

    def close(self):
        self.server.shutdown()
