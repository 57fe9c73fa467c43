"""The deployment shapes in deploy/ and the Dockerfile do what docs/deployment.md says.

The manifests are parsed and checked for the properties that matter (native sidecar, probes on the
health port, locked-down containers, TLS files where the config looks for them). The shipped
configs are then started as real `smtpconfig serve` processes, with only their paths and ports
moved into a temporary directory through SMTPCONFIG_* variables, and called the way the pods call
them: the sidecar's profile loader and app over the Unix socket, the standalone service over mTLS.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smtpconfig import settings as settings_mod
from smtpconfig.api.auth import new_token, token_hash
from smtpconfig.cli import client as cli_client
from smtpconfig.v2 import config_service_pb2 as v2
from smtpconfig.v2 import config_service_pb2_grpc as v2_grpc
from tests.kits.support import free_port, short_dir, wait_serving

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
CONFIGS = sorted((ROOT / "deploy" / "config").glob("*.toml"))
DOCKERFILE = ROOT / "Dockerfile"
GUIDE = ROOT / "docs" / "deployment.md"
SIDECAR = ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
STANDALONE = ROOT / "deploy" / "kubernetes" / "standalone.yaml"
SIDECAR_EDGE = ROOT / "deploy" / "kubernetes" / "sidecar-edge.yaml"
CENTRAL = ROOT / "deploy" / "kubernetes" / "central.yaml"
PROFILE_LOADER_HASH = re.compile(r'(identity = "profile-loader"\nsha256 = ")([0-9a-f]{64})(")')

# Environment variables the server reads: one per setting, plus the config file and the key.
SERVER_ENV = set(settings_mod.ENV_VARS.values()) | {
    "SMTPCONFIG_CONFIG", "SMTPCONFIG_KEY",
}
# Environment variables the CLI reads, as its source names them.
CLIENT_ENV = set(re.findall(r"SMTPCONFIG_[A-Z_]+", Path(cli_client.__file__).read_text()))
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# --- reading the manifests ------------------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in documents(path):
            if doc["kind"] in WORKLOADS:
                yield path, doc, doc["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", ()), *spec["containers"]]


def runs_server(container: dict[str, Any]) -> bool:
    """The image's ENTRYPOINT is `smtpconfig serve`; a container that sets `command` runs the CLI."""
    return "/smtpconfig:" in container["image"] and "command" not in container


def server_container(spec: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in containers(spec) if runs_server(c)]
    assert len(found) == 1, [c["name"] for c in found]
    return found[0]


def mount_at(spec: dict[str, Any], container: dict[str, Any], directory: str) -> dict[str, Any]:
    """The volume mounted at `directory` in `container`."""
    mounts = [m for m in container.get("volumeMounts", ()) if m["mountPath"] == directory]
    assert mounts, f"{container['name']} mounts nothing at {directory}"
    assert "subPath" not in mounts[0], f"{directory} is mounted with subPath: it would not see updates"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[0]["name"]]
    return volume


def file_in(spec: dict[str, Any], container: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The volume that provides file `path` to `container` (mounted at the file's directory)."""
    return mount_at(spec, container, str(PurePosixPath(path).parent))


def config_file(spec: dict[str, Any], container: dict[str, Any], docs: list[dict[str, Any]]) -> tuple[str, str]:
    """(path, text) of the config file a server container is started with."""
    args = container.get("args", [])
    assert "--config" in args, f"{container['name']} is not given --config"
    path = PurePosixPath(args[args.index("--config") + 1])
    volume = file_in(spec, container, path)
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    return str(path), config_map["data"][path.name]


def config_map_file(spec, container, docs, path: str) -> str:
    volume = file_in(spec, container, path)
    return one(docs, "ConfigMap", volume["configMap"]["name"])["data"][PurePosixPath(path).name]


def settings_of(text: str) -> settings_mod.Settings:
    """Settings from a config file's text, as the server would read them with no env set."""
    path = short_dir("cfg") / "smtpconfig.toml"
    try:
        path.write_text(text)
        return settings_mod.load(config_file=path, env={})
    finally:
        shutil.rmtree(path.parent)


def port_of(address: str) -> int:
    return settings_mod.split_address(address)[1]


# --- reading the Dockerfile -----------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) per stage, with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest.strip()))
    return stages


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_stages()[-1]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


DATA_DIR = image_env().get("SMTPCONFIG_DATA_DIR", "")


# --- the Dockerfile -------------------------------------------------------------------------------


def test_the_image_builds_in_two_stages_from_the_pinned_versions() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2, "a build stage and a runtime stage"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))

    def base(rest: str) -> str:
        image = rest.split()[0]
        variable = re.fullmatch(r"\$\{?(\w+)\}?", image)
        return args[variable.group(1)] if variable else image

    bases = [base(stage[0][1]) for stage in stages]
    assert bases == ["python:3.11-slim", "python:3.11-slim"], "one base for both: the venv links to its python"
    installs = [rest for keyword, rest in stages[0] if keyword == "RUN" and "pip install" in rest]
    assert installs, "the build stage installs with pip"
    assert any(re.search(r"pip install -c constraints\.txt \. \./plugins/file-provider\b", r) for r in installs)
    runtime = stages[1]
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/smtpconfig /opt/smtpconfig"], "only the venv reaches the runtime stage"
    assert not any(keyword == "RUN" and "pip" in rest for keyword, rest in runtime)


def test_the_image_runs_smtpconfig_serve_as_a_fixed_non_root_user() -> None:
    runtime = dockerfile_stages()[-1]
    (entrypoint,) = [json.loads(rest) for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint == ["smtpconfig", "serve"]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid, so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) != 0
    # The manifests run the server as the image's user.
    for _, _, spec in pod_specs():
        container = server_container(spec)
        effective = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        assert effective.get("runAsUser") == int(uid)


def test_the_image_keeps_its_data_in_a_volume_and_bakes_in_no_secret() -> None:
    runtime = dockerfile_stages()[-1]
    volumes = [json.loads(rest) for keyword, rest in runtime if keyword == "VOLUME"]
    assert DATA_DIR and [DATA_DIR] in volumes, "SMTPCONFIG_DATA_DIR is the image's volume"
    assert set(image_env()) & SERVER_ENV == {"SMTPCONFIG_DATA_DIR"}
    declared = [rest for keyword, rest in runtime if keyword in ("ENV", "ARG")]
    assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", " ".join(declared)), "no secret in a layer"
    assert not [k for k, _ in runtime if k == "EXPOSE"], "ports depend on the settings"


def test_the_build_context_lets_in_only_the_sources() -> None:
    rules = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "an allow-list: everything is out unless named"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "protos", "service", "plugins"}
    last_allow = max(i for i, r in enumerate(rules) if r.startswith("!"))
    after = set(rules[last_allow + 1:])
    assert {"**/__pycache__", "**/*.egg-info", "**/smtpconfig-data", ".venv", ".git", "tests"} <= after


# --- every manifest -------------------------------------------------------------------------------


def test_there_is_a_sidecar_and_a_standalone_shape() -> None:
    assert {p.name for p in MANIFESTS} >= {"sidecar.yaml", "standalone.yaml"}
    assert {p.name for p in CONFIGS} >= {"sidecar.toml", "standalone.toml"}
    for path in (SIDECAR, STANDALONE, SIDECAR_EDGE, CENTRAL):
        one(documents(path), "Deployment")


ALL_CONTAINERS = [
    pytest.param(spec, c, id=f"{path.stem}-{c['name']}")
    for path, _, spec in pod_specs() for c in containers(spec)
]


@pytest.mark.parametrize("spec, container", ALL_CONTAINERS)
def test_every_container_is_locked_down_and_sized(spec: dict[str, Any], container: dict[str, Any]) -> None:
    pod = spec.get("securityContext", {})
    own = container.get("securityContext", {})
    assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True
    assert own.get("runAsUser", pod.get("runAsUser", 1)) != 0
    assert own.get("allowPrivilegeEscalation") is False
    assert own.get("readOnlyRootFilesystem") is True
    assert own.get("capabilities", {}).get("drop") == ["ALL"]
    assert not own.get("capabilities", {}).get("add")
    assert not own.get("privileged")
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    resources = container.get("resources", {})
    assert {"cpu", "memory"} <= set(resources.get("requests", {}))
    assert "memory" in resources.get("limits", {})


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_the_config_map_holds_the_shipped_config(path: Path) -> None:
    docs = documents(path)
    (spec,) = [s for p, _, s in pod_specs() if p == path]
    _, text = config_file(spec, server_container(spec), docs)
    assert text == (ROOT / "deploy" / "config" / f"{path.stem}.toml").read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_shipped_configs_are_accepted(path: Path) -> None:
    settings = settings_mod.load(config_file=path, env={})
    assert settings.health_listen and settings.metrics_listen
    assert settings.log_format == "json"
    assert settings.key_file is None, "the key comes from a Secret in SMTPCONFIG_KEY (see the manifests)"
    assert settings.data_dir == settings_mod.DEFAULT_DATA_DIR, "the image's SMTPCONFIG_DATA_DIR decides it"


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_the_server_is_wired_to_its_config(path: Path) -> None:
    docs = documents(path)
    (deployment,) = [d for p, d, _ in pod_specs() if p == path]
    spec = deployment["spec"]["template"]["spec"]
    container = server_container(spec)
    settings = settings_of(config_file(spec, container, docs)[1])
    health = port_of(settings.health_listen)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health, f"{probe} must use the health_listen port"
        assert "service" not in container[probe]["grpc"], "the overall status, service \"\""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_of(settings.metrics_listen)
    ports = {p["containerPort"] for p in container["ports"]}
    assert {health, port_of(settings.metrics_listen)} <= ports
    keys = [e for e in container.get("env", ()) if e["name"] == "SMTPCONFIG_KEY"]
    if settings.upstream:
        assert not keys, "an edge seals nothing: it gets no data key"
    else:
        # A file from a Secret would be group-readable under fsGroup, and the server refuses such a key.
        (key,) = keys
        assert set(key["valueFrom"]["secretKeyRef"]) == {"name", "key"}, "from a Secret, and not optional"
    assert {"persistentVolumeClaim", "emptyDir"} & set(mount_at(spec, container, DATA_DIR)), "the data dir is a volume"
    assert spec["terminationGracePeriodSeconds"] > settings.grace_period


def test_every_smtpconfig_variable_in_the_manifests_is_read_by_someone() -> None:
    seen = 0
    for _, _, spec in pod_specs():
        for container in containers(spec):
            known = SERVER_ENV if runs_server(container) else CLIENT_ENV
            for item in container.get("env", ()):
                if item["name"].startswith("SMTPCONFIG_"):
                    seen += 1
                    assert item["name"] in known, f"{container['name']}: {item['name']} is read by nothing"
    assert seen, "the manifests use no SMTPCONFIG_ variable; this test checks nothing"


def test_every_smtpconfig_variable_in_the_guide_is_read_by_someone() -> None:
    named = set(re.findall(r"SMTPCONFIG_[A-Z_]*[A-Z]", GUIDE.read_text()))
    assert named, "the guide names no variable"
    assert named <= SERVER_ENV | CLIENT_ENV, named - SERVER_ENV - CLIENT_ENV


# --- the sidecar ----------------------------------------------------------------------------------


def test_the_sidecar_is_native_and_starts_before_the_app() -> None:
    docs = documents(SIDECAR)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    init = spec["initContainers"]
    sidecar = server_container(spec)
    assert sidecar in init and sidecar.get("restartPolicy") == "Always", "an init container that keeps running"
    assert init.index(sidecar) == 0, "first, so later init containers and the app find it serving"
    settings = settings_of(config_file(spec, sidecar, docs)[1])
    assert settings.listen == (), "no TCP API in the sidecar"
    assert settings.admin_token is False
    assert sidecar["startupProbe"]["grpc"]["port"] == port_of(settings.health_listen)


@pytest.mark.parametrize("path", [SIDECAR, SIDECAR_EDGE], ids=["island", "edge"])
def test_the_app_reaches_the_socket_through_a_shared_group_only(path: Path) -> None:
    docs = documents(path)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    sidecar = server_container(spec)
    settings = settings_of(config_file(spec, sidecar, docs)[1])
    assert settings.socket_path is not None
    socket_dir = str(settings.socket_path.parent)
    volume = mount_at(spec, sidecar, socket_dir)
    assert "emptyDir" in volume, "a volume only this pod's containers can reach"
    apps = spec["containers"]
    for app in apps:
        assert mount_at(spec, app, socket_dir) == volume
        assert not [m for m in app["volumeMounts"] if m["mountPath"] == DATA_DIR], "the app never sees the store"
        assert app["securityContext"]["runAsUser"] != sidecar["securityContext"]["runAsUser"]
    pod = spec["securityContext"]
    groups = {pod.get("fsGroup"), *pod.get("supplementalGroups", ())}
    assert int(settings.unix_socket_group) in groups, "every container has the socket's group"
    assert settings.unix_socket_mode & 0o070 == 0o060 and not settings.unix_socket_mode & 0o007
    grants = dict(settings.policy)[settings.unix_socket_identity]
    assert set(grants) == {"smtp:read", "smtp:resolve"}, "the app reads and resolves, nothing more"


def test_the_profile_loader_runs_after_the_sidecar_with_its_own_token() -> None:
    docs = documents(SIDECAR)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    init = spec["initContainers"]
    sidecar = server_container(spec)
    settings = settings_of(config_file(spec, sidecar, docs)[1])
    (loader,) = [c for c in init if c is not sidecar]
    assert init.index(loader) > init.index(sidecar)
    assert loader["command"][:3] == ["smtpconfig", "put", "-f"]
    profile = loader["command"][3]
    shipped = (ROOT / "deploy" / "config" / "sidecar-profile.json").read_text()
    assert config_map_file(spec, loader, docs, profile) == shipped
    env = {e["name"]: e["value"] for e in loader["env"]}
    assert env["SMTPCONFIG_TARGET"] == f"unix:{settings.socket_path}"
    assert "secret" in file_in(spec, loader, env["SMTPCONFIG_TOKEN_FILE"])
    assert "profile-loader" in dict(settings.tokens).keys()
    assert "smtp:modify" in dict(settings.policy)["profile-loader"]
    declared = {p["id"] for p in settings.providers}
    doc = json.loads((ROOT / "deploy" / "config" / "sidecar-profile.json").read_text())
    assert {doc[f]["Provider"] for f in ("RelayUsername", "RelayPassword")} <= declared


def test_the_vault_login_uses_a_projected_token_with_its_own_audience() -> None:
    docs = documents(SIDECAR)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    sidecar = server_container(spec)
    settings = settings_of(config_file(spec, sidecar, docs)[1])
    (vault,) = [p for p in settings.providers if p["type"] == "vault"]
    jwt_file = vault["initialization"]["JwtFile"]
    volume = file_in(spec, sidecar, jwt_file)
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["path"] == PurePosixPath(jwt_file).name
    assert source["serviceAccountToken"]["audience"] == "vault"
    assert spec["automountServiceAccountToken"] is False


# --- the edge sidecar and the central service it follows ------------------------------------------


def test_the_edge_sidecar_follows_the_central_with_no_credentials_in_the_pod() -> None:
    docs = documents(SIDECAR_EDGE)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    init = spec["initContainers"]
    edge = server_container(spec)
    assert init == [edge] and edge.get("restartPolicy") == "Always", "a native sidecar and no profile loader"
    settings = settings_of(config_file(spec, edge, docs)[1])
    assert settings.upstream and settings.listen == () and settings.admin_token is False
    assert settings.providers == (), "no provider instances in the pod"
    assert settings.store == "sqlite" and settings.key_file is None
    # The pod's identity toward the central: cert-manager's Secret, mounted whole so renewals show up.
    certificate = one(docs, "Certificate")
    files = {
        settings.upstream_ca_file: "ca.crt", settings.upstream_cert_file: "tls.crt", settings.upstream_key_file: "tls.key",
    }
    assert None not in files, "TLS to the central and a client certificate (mTLS)"
    for file, name in files.items():
        assert file.name == name, f"cert-manager writes {name}"
        volume = file_in(spec, edge, file)
        assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
        assert "items" not in volume["secret"]
    assert "client auth" in certificate["spec"]["usages"]
    # No Vault, no Secret but the certificate: nothing projected, no token, no key in any container.
    assert not [v for v in spec["volumes"] if "projected" in v]
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == [certificate["spec"]["secretName"]]
    for container in containers(spec):
        assert not [e for e in container.get("env", ()) if "valueFrom" in e], container["name"]
    assert spec["automountServiceAccountToken"] is False


def test_the_central_names_the_edges_and_lets_them_follow() -> None:
    edge_docs, docs = documents(SIDECAR_EDGE), documents(CENTRAL)
    edge_spec = one(edge_docs, "Deployment")["spec"]["template"]["spec"]
    edge = settings_of(config_file(edge_spec, server_container(edge_spec), edge_docs)[1])
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    central = settings_of(config_file(spec, server_container(spec), docs)[1])
    # The edge dials the central's Service, on the port the central listens on.
    service = one(docs, "Service")
    host, port = settings_mod.split_address(edge.upstream[0])
    name, namespace = host.split(".")[:2]
    assert (name, namespace) == (service["metadata"]["name"], service["metadata"]["namespace"])
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    named = {p["name"]: p["containerPort"] for p in server_container(spec)["ports"]}
    assert [named[service_port["targetPort"]]] == [port_of(a) for a in central.listen]
    assert host in one(docs, "Certificate")["spec"]["dnsNames"], "the edge checks the central's name"
    # The edge's identity is its certificate's URI SAN; the central trusts and grants exactly that.
    (identity,) = one(edge_docs, "Certificate")["spec"]["uris"]
    assert identity in central.edge_identities
    assert {"smtp:read", "smtp:watch", "smtp:resolve"} <= set(dict(central.policy)[identity])
    assert central.tls_client_ca_file is not None, "edges are known by certificate: mTLS"


def test_the_central_runs_three_replicas_on_etcd() -> None:
    docs = documents(CENTRAL)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", "no replica holds a store lock"
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    spec = deployment["spec"]["template"]["spec"]
    container = server_container(spec)
    text = config_file(spec, container, docs)[1]
    settings = settings_of(text)
    assert settings.store == "etcd" and settings.etcd_endpoints and not settings.upstream
    assert settings.etcd_password_file is not None
    assert "secret" in file_in(spec, container, settings.etcd_password_file)
    # Readiness on the overall status (test_the_server_is_wired_to_its_config); the store's own health
    # name is for alerts, and the manifest says so.
    assert "service" not in container["readinessProbe"]["grpc"]
    assert '"smtpconfig.store"' in CENTRAL.read_text()


# --- the standalone service -----------------------------------------------------------------------


def test_the_standalone_service_has_one_replica_and_one_writer() -> None:
    deployment = one(documents(STANDALONE), "Deployment")
    assert deployment["spec"]["replicas"] == 1, "SQLite has one writer; replicas need the cluster store"
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "a rolling update would wait on the store lock"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch", "keeps admin.token 0600"
    volume = mount_at(spec, server_container(spec), DATA_DIR)
    one(documents(STANDALONE), "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_the_standalone_service_mounts_the_certificate_where_the_config_looks() -> None:
    docs = documents(STANDALONE)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(spec)
    settings = settings_of(config_file(spec, container, docs)[1])
    certificate = one(docs, "Certificate")
    files = {
        settings.tls_cert_file: "tls.crt", settings.tls_key_file: "tls.key", settings.tls_client_ca_file: "ca.crt",
    }
    assert None not in files, "TLS and mTLS are both configured"
    for path, name in files.items():
        assert path.name == name, f"cert-manager writes {name}"
        volume = file_in(spec, container, path)
        assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
        assert "items" not in volume["secret"], "the whole Secret, so renewals show up"
    assert all(not settings_mod.is_loopback(settings_mod.split_address(a)[0]) for a in settings.listen)


def test_the_service_exposes_the_api_and_nothing_else() -> None:
    docs = documents(STANDALONE)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = server_container(spec)
    settings = settings_of(config_file(spec, container, docs)[1])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = one(docs, "Service")
    targets = [named.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]]
    assert targets == [port_of(a) for a in settings.listen]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_standalone_policy_names_callers_by_certificate() -> None:
    settings = settings_mod.load(config_file=ROOT / "deploy" / "config" / "standalone.toml", env={})
    identities = [identity for identity, _ in settings.policy]
    assert any(i.startswith("spiffe://") for i in identities)
    assert any(i.startswith("dns:") for i in identities)


# --- the shipped configs, running -----------------------------------------------------------------



class Running:
    """`smtpconfig serve --config FILE` with env overrides, reached the way its pod reaches it."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.health = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.config = workdir / "smtpconfig.toml"
        self.config.write_text(config_text)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SMTPCONFIG_")},
            "SMTPCONFIG_DATA_DIR": str(workdir / "data"),
            "SMTPCONFIG_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "SMTPCONFIG_HEALTH_LISTEN": self.health,
            "SMTPCONFIG_METRICS_LISTEN": self.metrics,
            **env,
        }
        self.log = workdir / "server.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "smtpconfig.cli", "serve", "--config", str(self.config)],
                stdout=out, stderr=out, env=self.env, cwd=workdir,
            )
        try:
            wait_serving(self.health, timeout=30, proc=self.proc)
        except BaseException as error:
            self.stop()
            raise AssertionError(self.log.read_text()) from error

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """The CLI as a separate process, in a directory with no smtpconfig-data of its own."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SMTPCONFIG_")}
        return subprocess.run(
            [sys.executable, "-m", "smtpconfig.cli", *args], capture_output=True, text=True,
            env={**clean, **env}, cwd=self.workdir, timeout=60,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_dir("dep")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_sidecar_config_serves_the_app_and_the_loader_over_the_socket(workdir: Path) -> None:
    text = (ROOT / "deploy" / "config" / "sidecar.toml").read_text()
    token = new_token()
    text, replaced = PROFILE_LOADER_HASH.subn(lambda m: m.group(1) + token_hash(token) + m.group(3), text)
    assert replaced == 1, "the sidecar config has one profile-loader token entry to fill in"
    (workdir / "loader.token").write_text(token + "\n")
    sock = workdir / "run" / "smtpconfig.sock"
    sock.parent.mkdir(mode=0o755)  # the pod's emptyDir: the server makes no directory outside its data
    group = os.getgroups()[-1] if os.getgroups() else os.getgid()
    server = Running(workdir, text, {"SMTPCONFIG_UNIX_SOCKET": str(sock), "SMTPCONFIG_UNIX_SOCKET_GROUP": str(group)})
    try:
        info = sock.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == group, "group members, and no one else"
        assert not (workdir / "data" / "admin.token").exists()
        target = {"SMTPCONFIG_TARGET": f"unix:{sock}"}

        profile = str(ROOT / "deploy" / "config" / "sidecar-profile.json")
        loaded = server.cli("put", "-f", profile, SMTPCONFIG_TOKEN_FILE=str(workdir / "loader.token"), **target)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr

        read = server.cli("get", "--json", **target)  # the app: no token, so the socket's identity
        assert read.returncode == 0, read.stderr
        stored = json.loads(read.stdout)
        assert stored["Host"] == "smtp.example.com" and stored["RelayPassword"]["Provider"] == 1
        refused = server.cli("put", "-f", profile, **target)
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr

        # The health port serves health and nothing else.
        with grpc.insecure_channel(server.health) as channel:
            with pytest.raises(grpc.RpcError) as error:
                v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=5) as reply:
            assert "smtpconfig_rpc_requests_total" in reply.read().decode()
        assert json.loads(server.log.read_text().splitlines()[0]), "log_format json: one object a line"
    finally:
        assert server.stop() == 0, server.log.read_text()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class _CA:
    """A throwaway CA issuing a server leaf and client leaves, written as cert-manager lays them out."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._sign(_name("deploy test CA"), self.key.public_key(), ca=True)

    def _sign(self, subject, public_key, *, ca=False, sans=(), usage=None) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(_name("deploy test CA"))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def leaf(self, cn: str, sans, usage) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(_name(cn), key.public_key(), sans=sans, usage=usage)
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def test_the_standalone_config_serves_callers_by_certificate(workdir: Path) -> None:
    ca = _CA()
    tls = workdir / "tls"
    tls.mkdir()
    chain, key = ca.leaf("localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                         ExtendedKeyUsageOID.SERVER_AUTH)
    (tls / "tls.crt").write_bytes(chain)
    (tls / "tls.key").write_bytes(key)
    (tls / "ca.crt").write_bytes(ca.pem)
    api = f"localhost:{free_port()}"
    server = Running(workdir, (ROOT / "deploy" / "config" / "standalone.toml").read_text(), {
        "SMTPCONFIG_LISTEN": api,
        "SMTPCONFIG_TLS_CERT_FILE": str(tls / "tls.crt"),
        "SMTPCONFIG_TLS_KEY_FILE": str(tls / "tls.key"),
        "SMTPCONFIG_TLS_CLIENT_CA_FILE": str(tls / "ca.crt"),
    })
    try:
        # An operator through `kubectl exec`: the image sets SMTPCONFIG_DATA_DIR, so the CLI finds the
        # socket and the admin token there.
        put = server.cli("put", "-f", str(ROOT / "examples" / "basic-v2.json"),
                         SMTPCONFIG_DATA_DIR=server.env["SMTPCONFIG_DATA_DIR"])
        assert put.returncode == 0, put.stdout + put.stderr

        def get(client: tuple[bytes, bytes] | None) -> grpc.StatusCode:
            credentials = grpc.ssl_channel_credentials(ca.pem, *(reversed(client) if client else (None, None)))
            with grpc.secure_channel(api, credentials) as channel:
                try:
                    v2_grpc.ConfigServiceStub(channel).GetSmtp(v2.GetSmtpRequest(), timeout=10)
                except grpc.RpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

        client = ExtendedKeyUsageOID.CLIENT_AUTH
        admin_tool = ca.leaf("smtp-admin", [x509.DNSName("smtp-admin.ops.example.org")], client)
        spiffe_id = x509.UniformResourceIdentifier("spiffe://example.org/ns/billing/sa/billing")
        billing = ca.leaf("billing", [spiffe_id], client)
        stranger = ca.leaf("stranger", [x509.DNSName("stranger.example.org")], client)
        assert get(admin_tool) == grpc.StatusCode.OK
        assert get(billing) == grpc.StatusCode.PERMISSION_DENIED, "billing may resolve, not read"
        assert get(stranger) == grpc.StatusCode.PERMISSION_DENIED, "default deny"
        assert get(None) == grpc.StatusCode.UNAVAILABLE, "no client certificate, no connection"
    finally:
        assert server.stop() == 0, server.log.read_text()


# --- the guide's recipe for running the shipped configs on this machine ----------------------------


def _guide_commands(config: str) -> tuple[list[tuple[dict[str, str], list[str]]], list[tuple[dict[str, str], list[str]]]]:
    """(server command, CLI commands) of the guide's section on running the shipped configs
    locally: each as (the variables it sets, its words)."""
    section = GUIDE.read_text().split("### The shipped configs on this machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            env = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            commands.append((env, words))
    servers = [c for c in commands if c[1][1:2] == ["serve"] and f"deploy/config/{config}.toml" in c[1]]
    clients = [c for c in commands if c[1][1:2] != ["serve"]]
    return servers, clients


def _as_here(words: list[str]) -> list[str]:
    """`.venv/bin/smtpconfig ...` as this interpreter runs it; paths in the checkout made absolute."""
    assert words[0] == ".venv/bin/smtpconfig", words
    rest = [str(ROOT / w) if (ROOT / w).exists() and "/" in w else w for w in words[1:]]
    return [sys.executable, "-m", "smtpconfig.cli", *rest]


@pytest.mark.parametrize("config", ["sidecar", "standalone"])
def test_the_guides_recipe_runs_each_shipped_config_on_this_machine(workdir: Path, config: str) -> None:
    (server_env, server_words), = _guide_commands(config)[0]
    # The guide's fixed API port may be taken on a shared machine: a free one here, nothing else changed.
    env = {k: re.sub(r":\d+$", ":0", v) for k, v in server_env.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMTPCONFIG_")}
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_as_here(server_words), stdout=out, stderr=out, env={**clean, **env}, cwd=workdir)
    try:
        socket_path = workdir / server_env["SMTPCONFIG_DATA_DIR"] / "smtpconfig.sock"
        wait_serving(f"unix:{socket_path}", timeout=30, proc=proc)
        health = re.search(r"health checks \(grpc\.health\.v1 only, no TLS\) on ([\w.:\[\]]+)", log.read_text())
        assert health, log.read_text()
        wait_serving(health.group(1), timeout=10)
        data = server_env["SMTPCONFIG_DATA_DIR"]
        for client_env, words in _guide_commands(config)[1]:
            if config != "sidecar":  # the sidecar's profile names its declared Vault; this one has none
                client_env = {**client_env, "SMTPCONFIG_DATA_DIR": data}
                words = [str(ROOT / "examples" / "basic-v2.json") if w.endswith("sidecar-profile.json") else w
                         for w in words]
            done = subprocess.run(_as_here(words), capture_output=True, text=True, timeout=60,
                                  env={**clean, **client_env}, cwd=workdir)
            assert done.returncode == 0, (words, done.stdout, done.stderr)
        assert "smtp.example.com" in done.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


def _inspection_recipe() -> tuple[list[str], str, list[list[str]]]:
    """From the guide's "Inspecting a sidecar": the `token new` words, the grant line for
    [policy], and the CLI words each `kubectl exec` runs."""
    section = GUIDE.read_text().split("### Inspecting a sidecar", 1)[1].split("\n### ", 1)[0]
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```(?:sh|toml)\n(.*?)```", section, re.S)]
    (token_new,) = [shlex.split(b) for b in blocks if "token new" in b]
    (grant,) = [b.strip() for b in blocks if b.strip().startswith("sidecar-inspector =")]
    execs = [shlex.split(line) for b in blocks for line in b.splitlines() if line.startswith("kubectl exec")]
    return token_new, grant, [words[words.index("--") + 2:] for words in execs]


@pytest.mark.parametrize("config", ["sidecar", "standalone"])
def test_token_new_appends_to_each_shipped_config_and_the_inspector_reads_a_sidecar(workdir: Path, config: str) -> None:
    """The guide's inspection recipe, run for real: `token new ... 2> ENTRY && cat ENTRY >> CONFIG` leaves a config the
    server starts with (even one that has [policy] and [[tokens]] already), and once the grant is
    moved into [policy] the inspector reads the audit trail and the providers."""
    token_new, grant, inspections = _inspection_recipe()
    words = token_new[:token_new.index("2>")]
    assert words[:3] == ["smtpconfig", "token", "new"] and "--out" in words
    words[words.index("--out") + 1] = str(workdir / "inspector.token")
    made = subprocess.run([sys.executable, "-m", "smtpconfig.cli", *words[1:]], capture_output=True, text=True,
                          timeout=60, cwd=workdir)
    assert made.returncode == 0 and made.stdout == "", made.stderr
    assert stat.S_IMODE((workdir / "inspector.token").stat().st_mode) == 0o600
    text = (ROOT / "deploy" / "config" / f"{config}.toml").read_text() + made.stderr  # `cat ENTRY >> CONFIG`
    assert "[policy]" in text and tomllib.loads(text), "appended as it is, the file is still TOML"
    printed = made.stderr.split("# In [policy]:\n", 1)[1].strip().removeprefix("#   ")
    assert tomllib.loads(printed) == tomllib.loads(grant), "the guide's grant is the one token new prints"
    text = text.replace("\n[policy]\n", f"\n[policy]\n{grant}\n", 1)  # the grant moved into [policy]

    sock = workdir / "run" / "smtpconfig.sock"
    sock.parent.mkdir()
    env = {"SMTPCONFIG_UNIX_SOCKET": str(sock), "SMTPCONFIG_UNIX_SOCKET_GROUP": "", "SMTPCONFIG_LISTEN": "127.0.0.1:0",
           "SMTPCONFIG_TLS_CERT_FILE": "", "SMTPCONFIG_TLS_KEY_FILE": "", "SMTPCONFIG_TLS_CLIENT_CA_FILE": ""}
    server = Running(workdir, text, env)
    try:
        app = server.cli("resolve", SMTPCONFIG_TARGET=f"unix:{sock}")  # audited, whatever its outcome
        assert "ResolveSmtp" not in app.stdout
        for args in inspections:
            args[args.index("--target") + 1] = f"unix:{sock}"
            args[args.index("--token-file") + 1] = str(workdir / "inspector.token")
            done = server.cli(*args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            if args[0] == "audit":
                assert "v2.ConfigService/ResolveSmtp" in done.stdout, done.stdout
            elif config == "sidecar":
                assert "vault" in done.stdout, done.stdout
    finally:
        assert server.stop() == 0, server.log.read_text()
