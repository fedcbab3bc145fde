"""raibid's images: the context and its tag, the rootless BuildKit Job, builds against the Kubernetes fake,
the Dockerfiles under hadolint, and every rendered pod on the resolved tag."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest

from raibid.cluster.client import Kube
from raibid.cluster.render import render, templates_dir
from raibid.config import Config
from raibid.images import catalog
from raibid.images.build import context_configmap, render_job, run_build
from raibid.images.context import collect, current, ignored, source_roots
from raibid.images.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
OK_LOG = ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s",
          "#2 [1/3] FROM docker.io/library/python:3.12-slim-bookworm", "#2 DONE 1.2s",
          "#3 [2/3] RUN apt-get update", "#3 CACHED",
          "#4 [3/3] COPY . /src/raibid", "#4 DONE 0.3s",
          "#5 exporting to image", "#5 pushing layers 0.4s done", "#5 DONE 2.0s"]
FAILED_LOG = ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s",
              "#2 [1/3] FROM docker.io/library/python:3.12-slim-bookworm", "#2 DONE 1.2s",
              "#3 [2/3] RUN apt-get update && apt-get install -y nosuchpkg",
              "#3 0.512 E: Unable to locate package nosuchpkg",
              '#3 ERROR: process "/bin/sh -c apt-get update && apt-get install -y nosuchpkg" did not complete '
              "successfully: exit code: 100",
              'error: failed to solve: process "/bin/sh -c apt-get update" did not complete successfully: '
              "exit code: 100"]


def copy_context_tree(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    package, pyproject, readme, templates = source_roots()
    dst = tmp_path / "src"
    shutil.copytree(package, dst / "raibid", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(templates, dst / "templates")
    shutil.copy(pyproject, dst / "pyproject.toml")
    shutil.copy(readme, dst / "README.md")
    return dst / "raibid", dst / "pyproject.toml", dst / "README.md", dst / "templates"


def test_same_context_same_tag_and_a_changed_file_gives_a_new_tag(tmp_path):
    roots = copy_context_tree(tmp_path)
    first = collect(*roots, version="1.2.3")
    assert collect(*roots, version="1.2.3").tag == first.tag
    assert first.tag.startswith("1.2.3-") and len(first.tag) == len("1.2.3-") + 12
    assert first.tarball() == collect(*roots, version="1.2.3").tarball()  # byte for byte: no mtimes
    (roots[3] / "images" / "raibid" / "Dockerfile").write_text("FROM scratch\n")
    assert collect(*roots, version="1.2.3").tag != first.tag
    assert collect(*copy_context_tree(tmp_path / "again"), version="1.2.4").tag != first.tag
    assert collect(*roots, version="1.0+local").tag.startswith("1.0_local-")  # '+' is not a tag character


def test_the_context_leaves_out_caches_and_what_dockerignore_names(tmp_path):
    roots = copy_context_tree(tmp_path)
    (roots[0] / "__pycache__").mkdir(exist_ok=True)
    (roots[0] / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    ctx = collect(*roots, version="1")
    paths = {p for p, _, _ in ctx.files}
    assert ".dockerignore" in paths and "pyproject.toml" in paths and "raibid/cli/images.py" in paths
    assert not [p for p in paths if "__pycache__" in p or p.startswith(("tests/", ".git", "docs/"))]
    assert ignored("tests/test_x.py", ["tests"]) and ignored("a/b/__pycache__/c", ["**/__pycache__"])
    assert not ignored("raibid/tests.py", ["tests"])


def test_a_wheel_install_resolves_the_same_tag_as_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    wheel = next(tmp_path.glob("raibid-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    pkg = site / "raibid"
    from_wheel = collect(pkg, pkg / "_build" / "pyproject.toml", pkg / "_build" / "README.md", pkg / "_templates",
                         version="0.1.0")
    assert from_wheel.tag == collect(*source_roots(), version="0.1.0").tag


def test_the_context_fits_a_configmap_and_unpacks_to_its_files():
    ctx = current()
    cm = context_configmap(ctx, "raibid-ci")
    kubernetes_validate.validate(cm, "1.31", strict=True)
    import base64

    data = base64.b64decode(cm["binaryData"]["context.tar.gz"])
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert names == [p for p, _, _ in ctx.files]


def job(push: bool = True, platforms: tuple[str, ...] = ("linux/arm64",)) -> dict:
    return render_job(catalog.ref(Config(), "rust"), current(), namespace="raibid-ci", platforms=platforms,
                      push=push, templates=templates_dir())


@pytest.mark.parametrize("push", [True, False])
def test_the_buildkit_job_is_strictly_valid_rootless_and_unprivileged(push):
    obj = job(push)
    kubernetes_validate.validate(obj, "1.31", strict=True)
    pod = obj["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"].endswith("-rootless") and ":latest" not in c["image"]
    assert c["command"] == ["sh", "-c"] and "buildctl-daemonless.sh build --progress=plain" in c["args"][0]
    assert {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"} in c["env"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["runAsNonRoot"] and sc["runAsUser"] == 1000
    assert sc["seccompProfile"] == {"type": "Unconfined"} and sc["appArmorProfile"] == {"type": "Unconfined"}
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    assert pod["automountServiceAccountToken"] is False and pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    out = f"--output type=image,name={catalog.ref(Config(), 'rust').ref},push={'true' if push else 'false'}"
    assert out in c["args"][0] and "--local dockerfile=/workspace/templates/images/rust" in c["args"][0]
    secrets = [v for v in pod["volumes"] if "secret" in v]
    assert bool(secrets) == push and all(v["secret"]["secretName"] == "raibid-image-push" for v in secrets)


def test_a_plain_http_registry_is_pushed_to_as_insecure():
    args = render_job(catalog.ref(Config(), "rust"), current(), namespace="raibid-ci", platforms=("linux/arm64",),
                      push=True, templates=templates_dir(), insecure=True)["spec"]["template"]["spec"]
    assert ",push=true,registry.insecure=true" in args["containers"][0]["args"][0]
    assert "registry.insecure" not in job()["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_a_loopback_registry_is_named_as_unreachable_from_the_build_pod():
    from raibid.images.build import push_problem

    assert "loopback" in push_problem("127.0.0.1:30080") and "loopback" in push_problem("localhost:30080")
    assert "loopback" in push_problem("[::1]:30080")
    assert push_problem("192.168.1.10:30080") is None and push_problem("gitea.lan") is None


def test_two_platforms_build_one_multi_arch_image_without_a_node_selector():
    pod = job(platforms=("linux/arm64", "linux/amd64"))["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "--opt platform=linux/arm64,linux/amd64" in pod["containers"][0]["args"][0]


def test_progress_names_the_failing_dockerfile_step():
    ok, bad = Progress(), Progress()
    for line in OK_LOG:
        ok.feed(line)
    for line in FAILED_LOG:
        bad.feed(line)
    assert (ok.total_steps, ok.steps_done, ok.steps_cached, ok.failed_step) == (3, 3, 1, None)
    assert bad.failed_step == "[2/3] RUN apt-get update && apt-get install -y nosuchpkg"
    assert bad.error and "exit code: 100" in bad.error


class BuildController:
    """Plays the Job controller and kubelet for build Jobs: a pod per Job, its log written, then the outcome."""

    def __init__(self, fake, log: list[str], ok: bool = True) -> None:
        self.fake, self.log, self.ok = fake, log, ok
        self.threads: list[threading.Thread] = []
        fake.on_write(self.hook)

    def hook(self, fake, verb, obj) -> None:
        if obj.get("kind") != "Job" or verb == "delete" or obj.get("status"):
            return
        name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
        pod = f"{name}-x7k2p"
        if fake.get_object("v1", "Pod", pod, ns) is not None:
            return
        fake.add_object({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": pod, "namespace": ns, "labels": {"job-name": name}},
                         "spec": {"containers": [{"name": "buildkit", "image": "x"}]},
                         "status": {"phase": "Pending"}})
        t = threading.Thread(target=self.play, args=(fake, ns, name, pod), daemon=True)
        self.threads.append(t)
        t.start()

    def play(self, fake, ns, name, pod) -> None:
        from tests.harness.kubefake import now_rfc3339

        fake.set_status("v1", "Pod", pod, ns, {"phase": "Running"})
        for line in self.log:
            fake.write_pod_log(ns, pod, line)
        fake.write_pod_log(ns, pod, done=True)
        fake.set_status("v1", "Pod", pod, ns, {"phase": "Succeeded" if self.ok else "Failed"})
        t = now_rfc3339()
        cond = {"type": "Complete" if self.ok else "Failed", "status": "True", "lastTransitionTime": t,
                "lastProbeTime": t}
        fake.set_status("batch/v1", "Job", name, ns, {"conditions": [cond], "startTime": t,
                                                      **({"succeeded": 1} if self.ok else {"failed": 1})})


@pytest.mark.parametrize("ok", [True, False])
def test_a_build_creates_the_job_streams_its_log_and_reports_the_outcome(kube, ok):
    BuildController(kube, OK_LOG if ok else FAILED_LOG, ok)
    client = Kube.from_kubeconfig(str(kube.kubeconfig), timeout=5)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    image, ctx = catalog.ref(Config(), "rust"), current()
    seen: list[str] = []
    result = run_build(client, image, ctx, job(), push=True, on_line=lambda line, p: seen.append(line),
                       timeout=10, interval=0.02)
    assert seen == (OK_LOG if ok else FAILED_LOG)
    assert kube.requests("GET", r"/pods/.*/log$")[0].query["follow"] == "true"
    assert result.ok is ok and result.job == job()["metadata"]["name"]
    if ok:
        assert (result.steps, result.steps_done, result.steps_cached, result.failed_step) == (3, 3, 1, None)
        again = run_build(client, image, ctx, job(), push=True, timeout=10, interval=0.02)
        assert again.ok and again.reused  # the same context: the Job that built it is found, nothing rebuilt
    else:
        assert result.failed_step == "[2/3] RUN apt-get update && apt-get install -y nosuchpkg"


def test_images_build_cli_reports_the_failing_step_and_exits_1(run, kube):
    hostile = "#3 [2/3] RUN apt-get update && apt-get install -y nosuchpkg \x1b]52;c;cHduZWQ=\x07 [red]x[/red]"
    BuildController(kube, [*FAILED_LOG[:4], hostile, *FAILED_LOG[4:]], ok=False)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    r = run("images", "build", "--only", "python", "--no-push", "--json")
    assert r.code == 1
    (data,) = r.json()
    assert data["ok"] is False and data["failed_step"].startswith("[2/3] RUN apt-get update")
    assert "the build failed at [2/3] RUN apt-get update" in r.err
    # Piped: one plain line per step on stderr, the log's own text escaped (no OSC 52 reaches the terminal).
    assert "python: #2 [1/3] FROM docker.io/library/python:3.12-slim-bookworm" in r.err
    assert "\x1b]52" not in r.err and "[red]x[/red]" in r.err and r.out.lstrip().startswith("[")
    assert kube.get_object("batch/v1", "Job", data["job"], "raibid-ci") is not None


def test_images_build_cli_succeeds_and_pushes_with_the_builder_token(run, kube):
    import base64
    import json

    BuildController(kube, OK_LOG)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-builder",
                     "namespace": "raibid-ci"}, "data": {"token": base64.b64encode(b"tok-123").decode()}})
    r = run("images", "build", "--only", "raibid", env={"RAIBID_GITEA_URL": "http://10.0.0.5:30080"})
    assert r.code == 0, r.err
    assert "tok-123" not in r.out + r.err and "loopback" not in r.err
    (job,) = kube.list_objects("batch/v1", "Job", "raibid-ci")
    assert ("name=10.0.0.5:30080/raibid/raibid:" in job["spec"]["template"]["spec"]["containers"][0]["args"][0])
    cfg = json.loads(base64.b64decode(kube.get_object("v1", "Secret", "raibid-image-push", "raibid-ci")
                                      ["data"][".dockerconfigjson"]))
    assert cfg["auths"]["10.0.0.5:30080"]["password"] == "tok-123"
    assert "loopback" in run("images", "build", "--only", "raibid").err  # the default gitea.url: named


def test_images_build_without_the_builder_secret_says_what_to_do(run, kube):
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    r = run("images", "build", "--only", "raibid")
    assert r.code == 3 and "raibid-gitea-builder" in r.err and "Traceback" not in r.err


def test_every_rendered_pod_references_the_resolved_tag_and_never_latest():
    cfg = Config()
    cfg.cluster.components = ["redis", "gitea", "keda", "flux", "agents", "mirror", "webhook"]
    tag = current().tag
    images = []
    for m in render(cfg):
        spec = m.obj.get("spec") or {}
        for pod in (spec.get("template"), (spec.get("jobTemplate") or {}).get("spec", {}).get("template"),
                    (spec.get("jobTargetRef") or {}).get("template")):
            for c in ((pod or {}).get("spec") or {}).get("containers", []):
                images.append((c["image"], c.get("imagePullPolicy")))
    raibids = [(i, p) for i, p in images if "/raibid/" in i]
    assert len(raibids) >= 4 and all(i.endswith(f":{tag}") and p == "IfNotPresent" for i, p in raibids)
    assert not [i for i, _ in images if i.endswith(":latest") or ":" not in i.rsplit("/", 1)[-1]]


def test_no_default_anywhere_is_latest():
    hits = subprocess.run(["grep", "-rn", ":latest", "raibid", "templates"], cwd=ROOT, capture_output=True,
                          text=True).stdout
    assert hits == ""


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "templates" / "images").glob("*/Dockerfile")),
                         ids=lambda p: p.parent.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    r = subprocess.run([hadolint, "--config", str(ROOT / "templates/images/.hadolint.yaml"), str(dockerfile)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = dockerfile.read_text()
    assert "golang:1.23" not in text and ":latest" not in text


def test_every_catalogue_image_has_a_dockerfile():
    for name in catalog.IMAGES:
        assert (ROOT / "templates" / "images" / name / "Dockerfile").is_file()


def test_the_context_is_the_sdist_less_what_dockerignore_names(tmp_path):
    """The same files as raibid's sdist (built with hatchling), minus the .dockerignore'd ones, plus that file."""
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    sdist = next(tmp_path.glob("raibid-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    patterns = [ln.strip() for ln in members["templates/images/.dockerignore"].decode().splitlines()
                if ln.strip() and not ln.startswith("#")]
    kept = {p: d for p, d in members.items() if not ignored(p, patterns)}
    ctx = collect(*source_roots(), version="0")
    files = {p: d for p, _, d in ctx.files if p != ".dockerignore"}
    assert files == kept


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_build_progress_bar_shows_buildkit_step_text_as_text_not_markup():
    """The bar's description is Rich markup: a step named like a style ("[internal]", "[link=...]")
    is shown as written, not turned into a style or a link."""
    from raibid.app import Application
    from raibid.cli.images import _Display
    from raibid.terminal import Terminal

    app = Application(terminal=Terminal(stdout=io.StringIO(), stderr=_TTY(), color=True))
    step = "[internal] load [link=https://example.invalid]metadata[/link] [bold]x"
    with _Display(app, "agent") as show:
        show.line(f"#5 {step}", Progress())
        assert show.progress is not None
        rendered = show.progress.columns[0].render(show.progress.tasks[0])
    assert rendered.plain == f"agent: {step}"
    assert not rendered.spans
