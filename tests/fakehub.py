"""A loopback HTTP server answering the part of the Hugging Face Hub API that kdsae uses, so the real
huggingface_hub client code (HF_ENDPOINT=http://127.0.0.1:PORT) can be exercised online without the network:
resolve (HEAD/GET, with X-Repo-Commit and the LFS etag), tree listing, model info, repo and branch creation,
preupload and commit (regular, base64 uploads). Repositories live in memory; every request's Authorization
header is recorded. A test helper only: nothing here is used by kdsae itself.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> branch -> files
        self.commits: dict[str, dict[str, str]] = {}  # repo -> branch -> commit id
        self.auth: list[str] = []
        self.gets: list[str] = []  # paths of file downloads (GET resolve)
        self.cards: list = []  # model card front matter validated (parsed YAML)
        self._lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- state -----------------------------------------------------------------------------------------------
    def put(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        with self._lock:
            self.repos.setdefault(repo, {})[branch] = dict(files)
            return self._commit(repo, branch)

    def _commit(self, repo: str, branch: str) -> str:
        files = self.repos[repo][branch]
        self.n_commits = getattr(self, "n_commits", 0) + 1
        sha = hashlib.sha1(
            repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
            + str(self.n_commits).encode()
        ).hexdigest()
        self.commits.setdefault(repo, {})[branch] = sha
        return sha

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def _send(self, h, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _json(self, h, obj, code: int = 200):
        self._send(h, code, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, h, code: int, error_code: str, head: bool = False):
        self._send(
            h,
            code,
            json.dumps({"error": error_code}).encode(),
            {"Content-Type": "application/json", "X-Error-Code": error_code},
            head=head,
        )

    def _branch(self, repo: str, rev: str) -> str | None:
        if rev in self.repos.get(repo, {}):
            return rev
        return next((b for b, c in self.commits.get(repo, {}).items() if c == rev), None)

    def _handle(self, h, method: str):
        self.auth.append(h.headers.get("Authorization", ""))
        url = urlparse(h.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            if len(parts) >= 5 and parts[2] == "resolve":  # /{org}/{name}/resolve/{rev}/{path}
                return self._resolve(h, method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if parts == ["api", "validate-yaml"] and method == "POST":  # the model card's front matter
                import yaml

                text = json.loads(body)["content"]
                try:
                    meta = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
                except yaml.YAMLError as e:
                    return self._json(h, {"errors": [{"message": str(e)}]}, 400)
                self.cards.append(meta)
                return self._json(h, {"warnings": [] if meta else [{"message": "empty metadata"}]})
            if parts[:2] == ["api", "repos"] and parts[2:] == ["create"] and method == "POST":
                req = json.loads(body)
                repo = f"{req.get('organization') or 'user'}/{req['name']}"
                if repo in self.repos:
                    return self._json(h, {"error": "exists", "url": f"{self.url}/{repo}"}, 409)
                self.repos[repo] = {"main": {".gitattributes": b"*.safetensors filter=lfs\n"}}
                self._commit(repo, "main")
                return self._json(h, {"url": f"{self.url}/{repo}"})
            if len(parts) >= 5 and parts[:2] == ["api", "models"]:
                repo, verb, rest = f"{parts[2]}/{parts[3]}", parts[4], parts[5:]
                if repo not in self.repos:
                    return self._error(h, 404, "RepoNotFound")
                rev = "/".join(rest) or "main"
                if verb == "branch" and method == "POST":
                    self.repos[repo][rev] = dict(self.repos[repo]["main"])
                    self.commits[repo][rev] = self.commits[repo]["main"]
                    return self._json(h, {})
                branch = self._branch(repo, rev)
                if branch is None:
                    return self._error(h, 404, "RevisionNotFound")
                files = self.repos[repo][branch]
                if verb == "revision":
                    return self._json(
                        h,
                        {
                            "id": repo,
                            "sha": self.commits[repo][branch],
                            "private": False,
                            "siblings": [{"rfilename": n} for n in sorted(files)],
                        },
                    )
                if verb == "tree":
                    return self._json(
                        h,
                        [
                            {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                            for n, d in sorted(files.items())
                        ],
                    )
                if verb == "preupload" and method == "POST":
                    req = json.loads(body)
                    return self._json(
                        h,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in req["files"]
                            ]
                        },
                    )
                if verb == "commit" and method == "POST":
                    return self._apply_commit(h, repo, branch, body)
            return self._error(h, 404, "NotFound")

    def _resolve(self, h, method, repo, rev, path):
        head = method == "HEAD"
        if repo not in self.repos:
            return self._error(h, 404, "RepoNotFound", head)
        branch = self._branch(repo, rev)
        if branch is None:
            return self._error(h, 404, "RevisionNotFound", head)
        data = self.repos[repo][branch].get(path)
        if data is None:
            return self._error(h, 404, "EntryNotFound", head)
        if not head:
            self.gets.append(path)
        etag = hashlib.sha256(data).hexdigest()
        self._send(
            h,
            200,
            data,
            {
                "X-Repo-Commit": self.commits[repo][branch],
                "ETag": f'"{etag}"',
                "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(len(data)),
                "Content-Type": "application/octet-stream",
            },
            head=head,
        )

    def _apply_commit(self, h, repo, branch, body):
        files = dict(self.repos[repo][branch])
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                parent = value.get("parentCommit")
                if parent and parent != self.commits[repo][branch]:
                    return self._json(h, {"error": "parent commit is not the head"}, 412)
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {k: v for k, v in files.items() if not k.startswith(value["path"].rstrip("/") + "/")}
            else:
                return self._json(h, {"error": f"unsupported {key}"}, 400)
        self.repos[repo][branch] = files
        sha = self._commit(repo, branch)
        return self._json(h, {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha, "success": True})
