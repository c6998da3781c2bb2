"""A local stand-in for the Hugging Face Hub's HTTP API, for testing `push_to_hub` with no network.

`huggingface_hub` sends every request through one `httpx2` client; `set_client_factory` swaps in a client whose
`MockTransport` answers the routes an upload uses (create repo, pre-upload, commit) and records what was committed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from contextlib import contextmanager

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory


class MockHub:
    def __init__(self, namespace: str = "tester") -> None:
        self.namespace = namespace
        self.repos: set[str] = set()
        self.commits: list[dict] = []  # {"repo", "summary", "files": {path: bytes}}
        self.requests: list[str] = []
        self.validated_cards = 0

    def files(self, repo_id: str) -> dict[str, bytes]:
        merged: dict[str, bytes] = {}
        for commit in self.commits:
            if commit["repo"] == repo_id:
                merged.update(commit["files"])
        return merged

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if request.method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload.get('organization') or self.namespace}/{payload['name']}"
            self.repos.add(repo_id)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo_id}", "name": repo_id})
        match = re.fullmatch(r"/api/models/(.+)/preupload/(.+)", path)
        if request.method == "POST" and match:
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes, "commitOid": "0" * 40})
        match = re.fullmatch(r"/api/models/(.+)/commit/(.+)", path)
        if request.method == "POST" and match:
            repo_id = match.group(1)
            commit = {"repo": repo_id, "summary": None, "files": {}}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    commit["summary"] = item["value"].get("summary")
                elif item["key"] == "file":
                    commit["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            self.commits.append(commit)
            oid = hashlib.sha1(body).hexdigest()
            return httpx2.Response(
                200,
                json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/{oid}", "commitOid": oid,
                      "pullRequestUrl": None},
            )  # fmt: skip
        if request.method == "POST" and path == "/api/validate-yaml":
            self.validated_cards += 1
            return httpx2.Response(200, json={})
        if request.method == "GET" and path == "/api/whoami-v2":
            return httpx2.Response(200, json={"name": self.namespace, "type": "user", "orgs": []})
        return httpx2.Response(404, json={"error": f"MockHub has no route for {request.method} {path}"})


@contextmanager
def mock_hub(namespace: str = "tester"):
    hub = MockHub(namespace)
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle), follow_redirects=True))
    try:
        yield hub
    finally:
        set_client_factory(default_client_factory)
