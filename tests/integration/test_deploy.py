"""What `deploy/` and the image promise, proven on what the real tools make of them.

Every overlay is rendered with the real `kubectl kustomize` from a copy of `deploy/` prepared
the way the README tells a person to (bot.env from its example, the image set in its one place,
a kubeconfig added), validated strictly against the Kubernetes schema, and every pod template is
checked: the image that was set, the Secret, the config and the kubeconfigs beside it, a
writable /tmp, non-root on a read-only root filesystem, resources that cover the measured
footprint.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from croniter import croniter
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.cli import serve
from bot.config import parse_config
from bot.fakes.kubernetes import BOT_RULES
from tests.conftest import create_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OVERLAYS = ["socket-mode", "http", "cronjobs", "evaluation"]
NAMESPACE = "k8s-access"
IMAGE = "registry.test/platform/k8s-access-bot:1.2.3-test"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
POD_OWNERS = {"Deployment", "StatefulSet", "Job", "CronJob"}


# --- rendering ----------------------------------------------------------------------------


def env_keys(text: str) -> dict[str, str]:
    """The variables an env file documents: its KEY=value lines, commented out or not."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            keys[match[1]] = match[2]
    return keys


def add_kubeconfig(deploy: Path, cluster: str) -> str:
    """Do what deploy/base/kubeconfigs/README.md says for a cluster reached from outside:
    the file in kubeconfigs/, listed under the generator, named by the config."""
    name = f"{cluster}.kubeconfig"
    (deploy / "base" / "kubeconfigs" / name).write_text("apiVersion: v1\nkind: Config\n")
    kustomization = deploy / "base" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("files: []") == 1, "the kubeconfigs generator starts empty"
    kustomization.write_text(text.replace("files: []", f"files: [kubeconfigs/{name}]"))
    config_file = deploy / "base" / "k8s-access.yaml"
    config = yaml.safe_load(config_file.read_text())
    first = next(iter(config["clusters"].values()))
    kubernetes = {k: v for k, v in first["kubernetes"].items() if k != "in_cluster"}
    config["clusters"][cluster] = {**first, "kubernetes": {
        **kubernetes, "kubeconfig": f"/etc/k8s-access/{name}"}}
    config_file.write_text(yaml.safe_dump(config))
    return name


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ as a person leaves it after the README's steps."""
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(ROOT / "deploy", copy,
                    ignore=shutil.ignore_patterns("bot.env", "*.kubeconfig"))
    example = (copy / "base" / "bot.env.example").read_text()
    (copy / "base" / "bot.env").write_text(
        "".join(f"{key}={value}\n" for key, value in env_keys(example).items()))
    kustomization = copy / "base" / "kustomization.yaml"
    text = kustomization.read_text()
    entry = yaml.safe_load(text)["images"][0]
    assert entry["name"] == "k8s-access-bot"
    name, tag = IMAGE.rsplit(":", 1)
    text = text.replace(entry["newName"], name).replace(f'newTag: "{entry["newTag"]}"',
                                                          f'newTag: "{tag}"')
    kustomization.write_text(text)
    add_kubeconfig(copy, "other")
    return copy


def render(deploy: Path, overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(BIN / "kubectl"), "kustomize", str(deploy / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered(deploy: Path) -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(deploy, overlay) for overlay in OVERLAYS}


def pod_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        name = f"{document['kind']}/{document['metadata']['name']}"
        if document["kind"] == "CronJob":
            yield name, document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif document["kind"] in POD_OWNERS:
            yield name, document["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_value(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def generated(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The ConfigMap or Secret that kustomize generated from `name` (with its hash suffix)."""
    found = [d for d in documents if d["kind"] == kind
             and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


# --- the manifests ------------------------------------------------------------------------


def test_every_overlay_is_tested() -> None:
    assert sorted(p.name for p in (ROOT / "deploy" / "overlays").iterdir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_in_an_order_that_applies(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    documents = rendered[overlay]
    for document in documents:
        kubernetes_validate.validate(document, "1.30.0", strict=True)
    # `kubectl apply -k` creates in this order: the namespace before anything in it, the
    # Secret and ConfigMap from bot.env and k8s-access.yaml with the rest, nothing left to
    # create by hand beforehand.
    assert documents[0]["kind"] == "Namespace"
    assert documents[0]["metadata"]["name"] == NAMESPACE
    for document in documents[1:]:
        if document["kind"] not in CLUSTER_SCOPED:
            assert document["metadata"].get("namespace") == NAMESPACE, document["metadata"]
    secret = generated(documents, "Secret", "k8s-access-bot")
    config_map = generated(documents, "ConfigMap", "k8s-access-config")
    kubeconfigs = generated(documents, "Secret", "k8s-access-bot-kubeconfigs")
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    for pod, spec in pod_specs(documents):
        for volume in spec.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                for kind in ("configMap", "secret"):
                    if kind in source:
                        assert (kind[0].upper() + kind[1:], source[kind]["name"]) in names, pod
        for container in containers(spec):
            for source in container.get("envFrom", []):
                assert ("Secret", source["secretRef"]["name"]) in names, pod
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] == secret["metadata"]["name"], pod
                    assert reference["key"] in secret["data"], (pod, reference["key"])
    # A NetworkPolicy that admits the bot admits every pod that runs it.
    for policy in (d for d in documents if d["kind"] == "NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                wanted = peer["podSelector"]["matchLabels"].items()
                for document in documents:
                    for pod, spec in pod_specs([document]):
                        template = document["spec"]["jobTemplate"]["spec"]["template"] \
                            if document["kind"] == "CronJob" else document["spec"]["template"]
                        if any(c["image"] == IMAGE for c in containers(spec)):
                            assert wanted <= template["metadata"]["labels"].items(), pod
    assert {"k8s-access.yaml"} == set(config_map["data"])
    assert set(kubeconfigs["data"]) == {"other.kubeconfig"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_the_image_that_was_set_non_root_with_tmp_config_and_secrets(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    documents = rendered[overlay]
    secret = generated(documents, "Secret", "k8s-access-bot")["metadata"]["name"]
    config_map = generated(documents, "ConfigMap", "k8s-access-config")
    kubeconfigs = generated(documents, "Secret", "k8s-access-bot-kubeconfigs")
    specs = list(pod_specs(documents))
    assert specs
    bot_pods = 0
    for pod, spec in specs:
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, pod
        volumes = {v["name"]: v for v in spec["volumes"]}
        bot_pod = any(c["image"] == IMAGE for c in containers(spec))
        bot_pods += bot_pod
        for container in containers(spec):
            where = f"{pod} container {container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly"), where
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], where
            if not bot_pod:  # PostgreSQL of the evaluation overlay: a pinned official image
                assert re.fullmatch(r"postgres:\d+[\w.-]*", container["image"]), where
                continue
            assert container["image"] == IMAGE, where
            # Kubernetes' service links would put e.g. K8S_ACCESS_PORT=tcp://… in the
            # environment, where the bot reads its own settings.
            assert spec["enableServiceLinks"] is False, where
            assert [s["secretRef"]["name"] for s in container["envFrom"]] == [secret], where
            config_path = PurePosixPath(env_value(container, "K8S_ACCESS_CONFIG") or "")
            config_mount = mounts[str(config_path.parent)]
            sources = volumes[config_mount["name"]]["projected"]["sources"]
            assert {"configMap": {"name": config_map["metadata"]["name"]}} in sources, where
            assert {"secret": {"name": kubeconfigs["metadata"]["name"]}} in sources, where
            assert config_path.name in config_map["data"], where
    assert bot_pods >= 1
    for document in documents:
        for pod, spec in pod_specs([document]):
            for container in containers(spec):
                assert container["image"] != "k8s-access-bot", pod


def test_kubeconfigs_are_mounted_where_the_config_points(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, documents in rendered.items():
        config_map = generated(documents, "ConfigMap", "k8s-access-config")
        kubeconfigs = generated(documents, "Secret", "k8s-access-bot-kubeconfigs")
        config = parse_config(yaml.safe_load(config_map["data"]["k8s-access.yaml"]),
                              Path("k8s-access.yaml"))
        paths = [PurePosixPath(c.kubernetes.kubeconfig) for c in config.clusters.values()
                 if c.kubernetes is not None and c.kubernetes.kubeconfig]
        assert paths, overlay
        for _pod, spec in pod_specs(documents):
            for container in containers(spec):
                if container["image"] != IMAGE:
                    continue
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                for path in paths:
                    assert str(path.parent) in mounts and path.name in kubeconfigs["data"]


def test_the_shipped_config_is_one_cluster_that_needs_nothing_unlisted() -> None:
    text = (ROOT / "deploy" / "base" / "k8s-access.yaml").read_text()
    config = parse_config(yaml.safe_load(text), Path("k8s-access.yaml"))
    assert len(config.clusters) == 1
    (cluster,) = config.clusters.values()
    # gitlab would need GITLAB_URL and GITLAB_TOKEN; a kubeconfig would need a file first.
    assert cluster.backend != "gitlab"
    assert cluster.kubernetes is not None and cluster.kubernetes.in_cluster
    assert "CHANGE-ME" in text and "CHANGE-ME" in cluster.kubernetes.server


def test_the_secret_comes_from_a_git_ignored_file_with_a_documented_example() -> None:
    example = env_keys((ROOT / "deploy" / "base" / "bot.env.example").read_text())
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DATABASE_URL",
            "POSTGRES_PASSWORD", "GITLAB_URL", "GITLAB_TOKEN"} <= set(example)
    assert example["DATABASE_URL"].startswith("postgresql://")
    for path in ("deploy/base/bot.env", "deploy/base/kubeconfigs/prod.kubeconfig"):
        done = subprocess.run(["git", "check-ignore", "--quiet", path], cwd=ROOT)
        assert done.returncode == 0, f"{path} is not git-ignored"


def measured_mib(row: str) -> list[int]:
    """The MiB numbers of a memory row of the README's benchmark table, as measured last (its
    ``after`` column where it sets a run beside an earlier one, else its ``value``)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    line = next((line for line in lines if line.startswith("| memory |") and row in line), None)
    assert line, f"README, Benchmarks: no memory row saying {row!r}"
    header = next(h for h in reversed(lines[:lines.index(line)]) if h.startswith("| section |"))
    names = [name.strip() for name in header.split("|")]
    value = line.split("|")[names.index("after" if "after" in names else "value")]
    assert value.strip().endswith("MiB"), line
    return [int(n) for n in re.findall(r"\d+", value)]


def mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"{quantity}: write memory in Mi or Gi"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_memory_requests_cover_the_measured_footprint(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    at_rest = measured_mib("`serve` + its worker at rest")
    after_reminders = measured_mib("own run of 10 000 reminders")
    assert len(at_rest) == len(after_reminders) >= 2  # serve + its workers
    for overlay, documents in rendered.items():
        for pod, spec in pod_specs(documents):
            for container in spec["containers"]:
                if container["image"] != IMAGE:
                    continue
                request = mebibytes(container["resources"]["requests"]["memory"])
                limit = mebibytes(container["resources"]["limits"]["memory"])
                # serve runs its workers in the same container; a CronJob runs one pass alone.
                needed = sum(after_reminders) if container["args"][0] == "serve" \
                    else max(after_reminders[1:])
                assert needed <= request <= limit, (overlay, pod, needed, request, limit)


def test_the_cronjobs_run_every_job_once_each_and_serve_leaves_them(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    documents = rendered["cronjobs"]
    jobs = {}
    for document in documents:
        if document["kind"] == "CronJob":
            assert croniter.is_valid(document["spec"]["schedule"])
            assert document["spec"]["concurrencyPolicy"] == "Forbid"
            (container,) = document["spec"]["jobTemplate"]["spec"]["template"]["spec"][
                "containers"]
            assert container["args"][:2] == ["jobs", "run"]
            jobs[container["args"][2]] = document["spec"]["schedule"]
    assert sorted(jobs) == ["escalate", "expire", "reconcile", "remind", "retry", "stream",
                           "timeout"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "serve", "--socket-mode", "--no-jobs"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bot_pod_migrates_first_and_probes_its_own_port(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    documents = rendered[overlay]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    (migrate,) = template["spec"]["initContainers"]
    assert migrate["args"] == ["db", "upgrade"]
    (bot,) = template["spec"]["containers"]
    assert bot["args"] == {"socket-mode": ["serve", "--socket-mode"],
                           "evaluation": ["serve", "--socket-mode"],
                           "http": ["serve", "--http"],
                           "cronjobs": ["serve", "--socket-mode", "--no-jobs"]}[overlay]
    port = int(env_value(bot, "K8S_ACCESS_PORT") or 0)
    assert bot["ports"] == [{"name": "http", "containerPort": port}]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert bot["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert bot["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for container in (migrate, bot):
        urls = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
        if overlay == "evaluation":  # built from the password; the server is in the overlay
            (url,) = urls
            assert url["value"].startswith("postgresql://k8s_access:$(POSTGRES_PASSWORD)@")
            host = url["value"].split("@")[1].split(":")[0]
            assert ("Service", host) in {(d["kind"], d["metadata"]["name"])
                                         for d in documents}
            names = [e["name"] for e in container["env"]]
            assert names.index("POSTGRES_PASSWORD") < names.index("DATABASE_URL")
        else:  # from the Secret
            assert urls == []
    if overlay == "http":
        kinds = {d["kind"] for d in documents}
        assert {"Service", "Ingress"} <= kinds


def test_deployed_rbac_is_what_the_tests_prove_sufficient(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    role = next(d for d in rendered["socket-mode"] if d["kind"] == "ClusterRole")

    def normal(rules: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])),
                       "resourceNames" in r) for r in rules)
    assert normal(role["rules"]) == normal(BOT_RULES)
    binding = next(d for d in rendered["socket-mode"] if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "k8s-access-bot",
                                    "namespace": NAMESPACE}]


def test_pods_that_start_together_all_migrate(tmp_path: Path) -> None:
    """Each bot pod runs `db upgrade` before it serves; replicas start at the same moment."""
    url, drop = create_database(tmp_path)
    env = {**os.environ, "DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql://")}
    try:
        processes = [subprocess.Popen([str(BIN / "k8s-access-bot"), "db", "upgrade"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for _ in range(4)]
        outputs = [(p.communicate(timeout=300)[0], p.returncode) for p in processes]
    finally:
        drop()
    for output, code in outputs:
        assert code == 0, output
        assert re.search(r"^database at \w+$", output, re.M), output


# --- the image ----------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_lints_clean_and_runs_as_non_root() -> None:
    done = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.M)) == 2
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r'^CMD \["serve"\]', text, re.M)
    assert "COPY migrations" in text


def test_the_image_installs_exactly_the_lock() -> None:
    installs = [line for line in dockerfile().splitlines()
                if re.match(r"^RUN .*\bpip install\b", line)]
    assert len(installs) == 2
    locked, project = installs
    assert "--require-hashes" in locked and "-r requirements.lock" in locked
    assert "--only-binary=:all:" in locked
    assert "--no-deps" in project and "--no-build-isolation" in project
    assert "bash scripts/lock.sh" in (ROOT / "requirements.lock").read_text()


def lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, hashes)}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.lock").read_text()):
        match = re.match(r"^([A-Za-z0-9][\w.-]*)==([\w.+!-]+)", entry)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:(\w+)",
                                                                      entry))
    return pins


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    pins = lock()
    assert all(hashes for _version, hashes in pins.values())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for line in project["project"]["dependencies"] + project["build-system"]["requires"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: bash scripts/lock.sh"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name][0]}, outside {requirement}: "
            "bash scripts/lock.sh")
    # And everything those need, as installed here: nothing is left for pip to choose.
    environment = default_environment()
    seen: set[str] = set()
    todo = [Requirement(r) for r in project["project"]["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate(
                {**environment, "extra": ""})):
            continue
        seen.add(name)
        assert name in pins, f"{name} (needed by the bot) is not locked: bash scripts/lock.sh"
        for extra in requirement.extras or {""}:
            for line in metadata.requires(name) or []:
                needed = Requirement(line)
                if needed.marker is None or needed.marker.evaluate(
                        {**environment, "extra": extra}):
                    todo.append(needed)


@pytest.fixture
def healthz() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_health_check_follows_the_configured_port(healthz: int) -> None:
    match = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", dockerfile(), re.M)
    assert match, "HEALTHCHECK … CMD [exec form]"
    command = json.loads(match[1])
    assert command[0] == "python"
    command[0] = sys.executable
    env_line = re.search(r"^\s+K8S_ACCESS_PORT=(\d+)", dockerfile(), re.M)
    assert env_line and f"EXPOSE {env_line[1]}" in dockerfile()
    for port, healthy in ((healthz, True), (free_port(), False)):
        done = subprocess.run(command, env={**os.environ, "K8S_ACCESS_PORT": str(port)},
                              capture_output=True, timeout=30)
        assert (done.returncode == 0) is healthy, (port, done.stderr)
    # serve listens where the health check asks.
    (port_option,) = [p for p in serve.params if p.name == "port"]
    assert port_option.envvar == "K8S_ACCESS_PORT"


# --- the README ---------------------------------------------------------------------------


def running_it() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Running it\n", 1)[1].split("\n## ", 1)[0]


def table_rows(section: str, header: str) -> list[list[str]]:
    lines = section.split(header + "\n", 1)[1].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_the_readme_deploy_steps_match_the_manifests(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    section = running_it()
    assert [row[0] for row in table_rows(section, "| overlay | what runs |")] == OVERLAYS
    schedules = {"every minute": "* * * * *"}
    schedules |= {f"every {n} minutes": f"*/{n} * * * *" for n in range(2, 60)}
    documented = {row[0]: schedules[row[1]]
                  for row in table_rows(section, "| CronJob | schedule | what it does |")}
    assert documented == {d["metadata"]["name"]: d["spec"]["schedule"]
                          for d in rendered["cronjobs"] if d["kind"] == "CronJob"}
    paths = re.findall(r"\b((?:deploy/(?:base|overlays|components)|scripts)/[\w./-]*\w)", section)
    for path in set(paths):
        if path != "deploy/base/bot.env":  # made from the example, git-ignored
            assert (ROOT / path).exists(), path
    for overlay in re.findall(r"kubectl apply -k deploy/overlays/([\w-]+)", section):
        assert overlay in OVERLAYS
    deployment = next(d for d in rendered["socket-mode"] if d["kind"] == "Deployment")
    bot = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert (f"requests {bot['requests']['memory'].removesuffix('Mi')} MiB with a "
            f"{bot['limits']['memory'].removesuffix('Mi')} MiB limit") in section
