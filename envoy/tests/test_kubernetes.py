"""The control endpoint's Kubernetes manifests (envoy/kubernetes/warden-control, a kustomize base).

- The base is rendered as `kustomize build` does for what it uses (its `resources`, `namespace`, `labels` and
  `images`), and every resource is validated against the Kubernetes API's OpenAPI schemas with kubernetes-validate
  in strict mode (unknown fields are errors).
- The hardening the base promises is checked: non-root, read-only root filesystem, no privilege escalation, resource
  requests and limits, probes on /healthz through a declared port, the mounts the `warden serve` arguments name.
- Cross-checks with the files that point at it: the Envoy Gateway patch's cluster and the plugin configuration's
  `control.authority`, the Istio file's in-cluster cluster name, and the authority keys and name.
- The placeholder upload token is refused by the real `warden serve`, so the base never runs with it.

Run: py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests/test_kubernetes.py -q
"""

import copy
import json
import os
import pathlib
import subprocess

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = ROOT / "envoy" / "kubernetes" / "warden-control"
ISTIO = ROOT / "envoy" / "istio" / "wasmplugin.yaml"
ENVOY_GATEWAY = ROOT / "envoy" / "envoy-gateway" / "extension-policy.yaml"
TEST_AUTHORITY_JWKS = ROOT / "policies" / "examples" / "keys" / "TEST-ONLY-authority.jwks.json"
KUBERNETES_VERSION = "1.33.0"
CLUSTER_SCOPED = {"Namespace"}


def render(base=BASE):
    """The resources of a kustomize base, as `kustomize build` renders them for the features the base uses."""
    k = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    assert k["kind"] == "Kustomization"
    allowed = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert set(k) <= allowed, f"kustomization uses {set(k) - allowed}: teach render() about it"
    images = {i["name"]: i for i in k.get("images", [])}
    out = []
    for name in k["resources"]:
        for doc in yaml.safe_load_all((base / name).read_text(encoding="utf-8")):
            if doc is None:
                continue
            doc = copy.deepcopy(doc)
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = k["namespace"]
            for group in k.get("labels", []):
                doc["metadata"].setdefault("labels", {}).update(group["pairs"])
                assert not group.get("includeSelectors"), "selectors are set by hand in the base"
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"] in images:
                    i = images[c["image"]]
                    c["image"] = f"{i['newName']}:{i['newTag']}"
            out.append((name, doc))
    return k, out


def by_kind(kind):
    return [d for _, d in render()[1] if d["kind"] == kind]


def one(kind):
    docs = by_kind(kind)
    assert len(docs) == 1, f"expected one {kind}, got {len(docs)}"
    return docs[0]


def args_of(container):
    """`--flag=value` arguments of the container as a dict (`--flag` alone maps to True)."""
    out = {}
    for a in container["args"][1:]:
        assert a.startswith("--"), a
        name, _, value = a[2:].partition("=")
        out[name] = value if _ else True
    return out


def test_every_resource_validates_against_the_kubernetes_schemas():
    _, docs = render()
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "PersistentVolumeClaim", "Secret", "Service"]
    for name, doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_is_strict():
    """A typo in a field or a wrong type would be caught."""
    deployment = one("Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/healthz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


def test_the_deployment_is_hardened_and_its_mounts_match_its_arguments():
    d = one("Deployment")
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] in ports
    assert c["args"][0] == "serve"
    args = args_of(c)
    assert args["listen"] == f"0.0.0.0:{ports['http']}"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes)
    # --dir is the persistent volume, the only writable mount.
    assert mounts["bundles"]["mountPath"] == args["dir"]
    assert volumes["bundles"]["persistentVolumeClaim"]["claimName"] == one("PersistentVolumeClaim")["metadata"]["name"]
    assert [m for m in mounts.values() if not m.get("readOnly")] == [mounts["bundles"]]
    # --keys and --upload-token-file are files of the ConfigMap and the Secret.
    keys_dir, keys_file = args["keys"].rsplit("/", 1)
    assert mounts["keys"]["mountPath"] == keys_dir
    assert volumes["keys"]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    assert keys_file in one("ConfigMap")["data"]
    tokens_dir, tokens_file = args["upload-token-file"].rsplit("/", 1)
    assert mounts["upload-tokens"]["mountPath"] == tokens_dir
    assert volumes["upload-tokens"]["secret"]["secretName"] == one("Secret")["metadata"]["name"]
    assert tokens_file in one("Secret")["stringData"]
    assert volumes["upload-tokens"]["secret"]["defaultMode"] == 0o440
    # One replica, replaced not rolled (ReadWriteOnce volume, one upload lock).
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
    assert one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The Service selects the pods and reaches the declared port.
    svc = one("Service")
    assert svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    assert d["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    [port] = svc["spec"]["ports"]
    assert port["targetPort"] in ports
    assert port["name"].startswith("http"), "Istio's protocol selection by port name"
    assert c["image"] == "registry.example.com/warden/warden-control:0.1.0"


def test_the_gateway_files_point_at_this_service():
    svc = one("Service")
    name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
    [port] = svc["spec"]["ports"]
    fqdn = f"{name}.{ns}.svc.cluster.local"
    assert {d["metadata"]["name"] for d in by_kind("Namespace")} == {ns}

    docs = list(yaml.safe_load_all(ENVOY_GATEWAY.read_text(encoding="utf-8")))
    [patch] = [d for d in docs if d and d["kind"] == "EnvoyPatchPolicy"]
    cluster = patch["spec"]["jsonPatches"][0]["operation"]["value"]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    socket = endpoint["endpoint"]["address"]["socket_address"]
    assert (socket["address"], socket["port_value"]) == (fqdn, port["port"])
    [policy] = [d for d in docs if d and d["kind"] == "EnvoyExtensionPolicy"]
    control = policy["spec"]["wasm"][0]["config"]["control"]
    assert control["authority"] == f"{fqdn}:{port['port']}"
    assert control["cluster"] == cluster["name"]

    istio = ISTIO.read_text(encoding="utf-8")
    assert f"outbound|{port['port']}||{fqdn}" in istio
    assert f"Service `{name}` in namespace `{ns}`" in istio

    # The authority uploads must name is the one the gateways pin, and so are the keys.
    container = one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert args_of(container)["authority"] == policy["spec"]["wasm"][0]["config"]["authority"]
    jwks = json.loads(one("ConfigMap")["data"]["authority.jwks.json"])
    assert jwks == json.loads(TEST_AUTHORITY_JWKS.read_text(encoding="utf-8"))
    assert jwks == policy["spec"]["wasm"][0]["config"]["bundle_keys"]


def warden_bin():
    path = pathlib.Path(os.environ.get("WARDEN_BIN", ROOT / "target" / "debug" / "warden"))
    assert path.is_file(), f"{path} is missing: build it with `cargo build -p warden-cli` (scripts/test.sh does)"
    return path


def test_the_placeholder_upload_token_is_refused(tmp_path):
    """Applied as is, the base does not serve uploads with a guessable token: `warden serve` refuses to start."""
    tokens = tmp_path / "upload-tokens"
    tokens.write_text(one("Secret")["stringData"]["upload-tokens"], encoding="utf-8")
    keys = tmp_path / "authority.jwks.json"
    keys.write_text(one("ConfigMap")["data"]["authority.jwks.json"], encoding="utf-8")
    (tmp_path / "bundles").mkdir()
    r = subprocess.run(
        [warden_bin(), "serve", "--listen", "127.0.0.1:0", "--dir", tmp_path / "bundles", "--keys", keys,
         "--authority", "policy.acme.example", "--upload-token-file", tokens],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, r
    assert "the upload token must be at least 16 characters" in r.stderr
