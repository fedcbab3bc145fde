"""The token reaches git through env-injected config only, and never survives in git's messages."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from raibid.errors import UsageError
from raibid.gitcreds import git_env, scrub, secret_forms, strip_git_auth


def test_header_is_scoped_to_the_server_and_inherited_git_config_cannot_add_another():
    env = git_env({"http://gitea.local:3000/acme/app.git": "tok"}, username="raibid",
                  base={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": "Authorization: Basic injected"})
    assert env["GIT_CONFIG_COUNT"] == "4" and "injected" not in str(env)
    assert env["GIT_CONFIG_KEY_2"] == "http.http://gitea.local:3000/.extraHeader"
    assert env["GIT_CONFIG_VALUE_2"] == "Authorization: Basic " + base64.b64encode(b"raibid:tok").decode()
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "tok" not in str(strip_git_auth(env))


def test_git_sees_the_header_config_for_that_url_only(tmp_path):
    env = git_env({"http://127.0.0.1:9/x.git": "tok"}, base={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    out = subprocess.run(["git", "config", "--get-urlmatch", "http.extraHeader", "http://127.0.0.1:9/x.git"],
                         env=env, capture_output=True, text=True)
    assert out.stdout.strip().startswith("Authorization: Basic ")
    other = subprocess.run(["git", "config", "--get-urlmatch", "http.extraHeader", "http://elsewhere/x.git"],
                           env=env, capture_output=True, text=True)
    assert other.stdout.strip() == ""


def test_git_reads_no_user_or_system_config_and_runs_no_hook(tmp_path):
    """A build that wrote ~/.gitconfig (a hooksPath, a credential helper, an alias) or the system's config
    changes nothing for raibid's git: none of it is read, and no hook runs, not even the repository's."""
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    ran = tmp_path / "hook-ran"
    for hook in ("post-checkout", "post-commit", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\nenv >> {ran}\n")
        (hooks / hook).chmod(0o755)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n[alias]\n\tst = status\n"
                                     "[credential]\n\thelper = !evil\n[user]\n\tname = planted\n")
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"), "GIT_CONFIG_NOSYSTEM": "0"}
    env = git_env({"http://127.0.0.1:9/x.git": "tok"}, base=base)
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    shown = subprocess.run(["git", "config", "--show-origin", "--list"], env=env, capture_output=True,
                           text=True, cwd=tmp_path).stdout
    assert "planted" not in shown and "evil" not in shown and str(hooks) not in shown
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
    (repo / ".git" / "hooks" / "post-commit").write_text(f"#!/bin/sh\necho repo-hook >> {ran}\n")
    (repo / ".git" / "hooks" / "post-commit").chmod(0o755)
    (repo / "f").write_text("x\n")
    subprocess.run(["git", "add", "f"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "m"], cwd=repo,
                   env=env, check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", "HEAD"], cwd=repo, env=env, check=True)
    assert not ran.exists()
    # The same git with the user's config does run the planted hook: the test would see it.
    subprocess.run(["git", "checkout", "-q", "--detach", "HEAD"], cwd=repo, check=True,
                   env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert ran.exists()


def test_no_token_means_no_header_and_bad_urls_are_refused():
    env = git_env({"https://gitea.local/": None})
    assert not any("extraHeader" in v for v in env.values())
    with pytest.raises(UsageError):
        git_env({"ssh://git@host/x": "t"})


def test_scrub_removes_plain_base64_and_userinfo():
    forms = secret_forms("s3cret")
    text = ("fatal: unable to access 'https://bob:s3cret@host/x.git/': 403 "
            f"Authorization: Basic {base64.b64encode(b'raibid:s3cret').decode()} s3cret")
    clean = scrub(text, forms)
    assert "s3cret" not in clean and base64.b64encode(b"raibid:s3cret").decode() not in clean
    assert "https://***@host/x.git/" in clean


@pytest.mark.parametrize("value", ["hunter2-secret-value", "hunter2-secret-valu", "a/b+c=d&e f:g@h", "line one\nline two"])
def test_every_form_of_a_secret_is_masked_in_text_around_it(value):
    from urllib.parse import quote, quote_plus

    from raibid.gitcreds import mask, mask_forms

    forms = mask_forms([value])
    raw = value.encode()
    texts = [raw, quote(value, safe="").encode(), quote_plus(value).encode()]
    for before in (b"", b"a", b"ab", b"abc"):  # base64 of the value inside a longer text, at each alignment
        for after in (b"", b"x", b"xy"):
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                texts.append(enc(before + raw + after))
    for text in texts:
        masked = mask(b"<" + text + b">", forms)
        assert b"***" in masked and raw not in masked, (text, masked)
    if "\n" in value:  # each line of a multi-line value on its own (a log stores lines)
        assert mask(b"line two, alone", forms) == b"***, alone"
    assert scrub(f"x {value} y", [value]).count("***") >= 1


@pytest.mark.parametrize("value", ["a/b+c=d&e f:g@h~x", "p@ss/w0rd:with;many?chars#" * 4])
def test_url_encodings_of_every_common_kind_are_masked(value):
    """Python's quote (safe '/'), quote_plus, encodeURIComponent and encodeURI, with either case of hex digit."""
    from urllib.parse import quote, quote_plus

    from raibid.gitcreds import mask, mask_forms

    forms = mask_forms([value])
    encodings = {quote(value), quote(value, safe=""), quote_plus(value), quote(value, safe="-_.!~*'()"),
                 quote(value, safe=";,/?:@&=+$-_.!~*'()#")}
    for enc in encodings | {e.lower() for e in encodings}:
        if enc == value:
            continue
        masked = mask(f"<{enc}>".encode(), forms)
        assert masked == b"<***>", (enc, masked)


def test_base64_wrapped_at_76_or_64_columns_is_masked_line_by_line():
    """`base64` (coreutils, Python's encodebytes) wraps at 76 columns and PEM at 64: a log holds each line."""
    from raibid.gitcreds import mask, mask_forms

    value = "a-long-deploy-key-" * 8  # 144 bytes: 192 base64 characters, over two wrap widths
    forms = mask_forms([value])
    for wrapped in (base64.encodebytes(value.encode()).decode(),
                    "\n".join(base64.b64encode(value.encode()).decode()[i:i + 64] for i in range(0, 192, 64))):
        for line in wrapped.splitlines():
            masked = mask(line.encode(), forms)
            assert len(line) < 8 or masked == b"***", (line, masked)
