"""Real git repositories served over smart HTTP (`git http-backend`) on 127.0.0.1.

Basic auth: any user name, the password must be the token. Push is enabled.
Chunked request bodies (git sends them above 1 MiB) are decoded before the CGI.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness.served import Handler, Served

GIT_ENV = {
    "GIT_AUTHOR_NAME": "raibid-test", "GIT_AUTHOR_EMAIL": "test@raibid.invalid",
    "GIT_COMMITTER_NAME": "raibid-test", "GIT_COMMITTER_EMAIL": "test@raibid.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    full_env = {**os.environ, **GIT_ENV, "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, check=True, capture_output=True,
                          text=True).stdout.strip()


class GitHTTPServer(Served):
    def __init__(self, root: Path, token: str = "git-test-token") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.tokens: set[str] = {token}  # every password accepted (a Gitea fake adds its API tokens)
        self.requests: list[tuple[str, str, int]] = []
        self.chunked_bodies = 0
        # Called as on_request(method, path, query) before each authorised request is served, so a test
        # can change a repo between a client's steps (e.g. push to it just before another push starts).
        self.on_request: Callable[[str, str, str], None] | None = None
        # Called as authorize(password, repo, write) for an authenticated request (repo "owner/name",
        # write for a push): None lets it through, else the HTTP status to answer (a Gitea fake
        # enforces its users' permissions and token scopes here).
        self.authorize: Callable[[str, str, bool], int | None] | None = None

    # ------------------------------------------------------------------ server
    def start(self) -> GitHTTPServer:
        self._serve(_GitHandler)
        return self

    def url(self, repo: str) -> str:
        return f"{self.base_url}/{repo}.git"

    # ------------------------------------------------------------------ repos
    def path(self, repo: str) -> Path:
        return self.root / f"{repo}.git"

    def create_repo(self, repo: str, *, branch: str = "main", files: dict[str, str] | None = None) -> Path:
        """A bare repo; with ``files``, one initial commit on ``branch``."""
        p = self.path(repo)
        p.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "-q", "-b", branch, str(p))
        git("config", "http.receivepack", "true", cwd=p)
        if files is not None:
            self.commit(repo, branch, files, "initial commit")
        return p

    def commit(self, repo: str, branch: str, files: dict[str, str], message: str = "change") -> str:
        """Commit ``files`` on top of ``branch`` (creating it) and return the new sha."""
        bare = self.path(repo)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            git("init", "-q", "-b", branch, cwd=work)
            has_branch = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q",
                                         f"refs/heads/{branch}"], capture_output=True).returncode == 0
            if has_branch:
                git("fetch", "-q", str(bare), f"refs/heads/{branch}", cwd=work)
                git("reset", "-q", "--hard", "FETCH_HEAD", cwd=work)
            for name, content in files.items():
                f = work / name
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(content)
                if name.endswith(".sh") or name.startswith("bin/"):
                    f.chmod(0o755)
            git("add", "-A", cwd=work)
            git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
            git("push", "-q", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work)

    def tag(self, repo: str, name: str, ref: str = "HEAD") -> str:
        bare = self.path(repo)
        git("tag", name, ref, cwd=bare)
        return git("rev-parse", name, cwd=bare)

    def refs(self, repo: str) -> dict[str, str]:
        out = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=self.path(repo))
        return {name: sha for name, sha in (line.split(" ", 1) for line in out.splitlines() if line)}


class _GitHandler(Handler):
    owner: GitHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection, as git http-backend's CGI expects

    def _authorized(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        return (user or "git") if password in self.owner.tokens else None

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        user = self._authorized()
        if user is None:
            self.owner.requests.append((method, split.path, 401))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="raibid-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, chunked = self.read_body()
        self.owner.chunked_bodies += chunked
        if self.owner.authorize is not None:
            repo = split.path.lstrip("/").split(".git/", 1)[0]
            write = "git-receive-pack" in split.path or "service=git-receive-pack" in split.query
            password = base64.b64decode(self.headers["Authorization"][6:]).decode().partition(":")[2]
            refused = self.owner.authorize(password, repo, write)
            if refused is not None:
                self.owner.requests.append((method, split.path, refused))
                self.send_response(refused)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if self.owner.on_request is not None:
            self.owner.on_request(method, split.path, split.query)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.owner.root), "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": method, "PATH_INFO": split.path, "QUERY_STRING": split.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.owner.requests.append((method, split.path, status))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
