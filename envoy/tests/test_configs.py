"""The deployment files under envoy/, checked against the platforms' own schemas and shapes.

- envoy/envoy.yaml is parsed into envoy.config.bootstrap.v3.Bootstrap with Envoy's protobuf schema (the
  `xds-protos` package): every typed config in an `Any` must resolve, and unknown fields are errors.
- envoy/istio/wasmplugin.yaml and envoy/envoy-gateway/extension-policy.yaml are checked structurally (apiVersion,
  kind, required fields, fail-closed settings); the cluster that Envoy Gateway's patch adds is parsed with Envoy's
  schema too (envoy.config.cluster.v3.Cluster).
- In every file, the embedded plugin configuration is extracted and its control cluster must exist in that
  deployment; its field names must be ones the filter knows (read from plugin/core/src/config.rs).
- envoy/compose.yaml and envoy/Dockerfile must agree with envoy/envoy.yaml (service names, ports, build targets).

The filter's own validation of each plugin configuration (the real warden.wasm in the wasmtime host) is
host-tests/tests/it/deploy_configs.rs.

Run: py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests -q
"""

import copy
import json
import pathlib
import re

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf import wrappers_pb2

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2

# Imported for their side effect: they register the message types that the `Any` typed configs name, so that
# ParseDict can resolve each "@type".
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as http_wasm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
BOOTSTRAP = ENVOY_DIR / "envoy.yaml"
ISTIO = ENVOY_DIR / "istio" / "wasmplugin.yaml"
ENVOY_GATEWAY = ENVOY_DIR / "envoy-gateway" / "extension-policy.yaml"
COMPOSE = ENVOY_DIR / "compose.yaml"
DOCKERFILE = ENVOY_DIR / "Dockerfile"
CONFIG_RS = ROOT / "plugin" / "core" / "src" / "config.rs"

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
DECISION_FILTER_STATE = "%FILTER_STATE(wasm.warden_decision:PLAIN)%"
# The TEST authority of policies/examples/keys/ (the examples pin it; the README says to replace it).
TEST_AUTHORITY_JWKS = ROOT / "policies" / "examples" / "keys" / "TEST-ONLY-authority.jwks.json"


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_one(path):
    docs = load_docs(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, got {len(docs)}"
    return docs[0]


def docs_by_kind(path):
    out = {}
    for d in load_docs(path):
        assert isinstance(d, dict) and "kind" in d, f"{path}: a document without kind"
        out.setdefault(d["kind"], []).append(d)
    return out


def raw_struct_fields(struct_name):
    """The JSON field names the filter accepts: the fields of `struct <name>` in plugin/core/src/config.rs."""
    text = CONFIG_RS.read_text(encoding="utf-8")
    m = re.search(r"struct " + struct_name + r" \{(.*?)\n\}", text, re.S)
    assert m, f"{CONFIG_RS}: no struct {struct_name}"
    fields = set(re.findall(r"^\s+(\w+): Option<Value>,", m.group(1), re.M))
    assert fields, f"{CONFIG_RS}: struct {struct_name} has no fields"
    return fields


def parse_bootstrap(doc):
    msg = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(doc, msg)  # strict: unknown fields and unresolvable "@type" raise ParseError
    return msg


def bootstrap_wasm_filters(bootstrap):
    """(listener name, HttpConnectionManager, [HttpFilter]) for every HCM of the bootstrap."""
    out = []
    for listener in bootstrap.static_resources.listeners:
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    hcm = hcm_pb2.HttpConnectionManager()
                    assert f.typed_config.Unpack(hcm)
                    out.append((listener.name, hcm, list(hcm.http_filters)))
    return out


def plugin_config_from_wasm(http_filter):
    wasm = http_wasm_pb2.Wasm()
    assert http_filter.typed_config.type_url == WASM_FILTER_TYPE
    assert http_filter.typed_config.Unpack(wasm)
    config = wasm.config
    assert config.configuration.type_url == STRING_VALUE_TYPE, "the plugin configuration must be a StringValue"
    value = wrappers_pb2.StringValue()
    assert config.configuration.Unpack(value)
    return config, value.value


def embedded_plugin_configs():
    """(source, JSON text as the platform hands it to the filter) for every plugin configuration in envoy/."""
    out = []
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    for listener, _, filters in bootstrap_wasm_filters(bootstrap):
        for f in filters:
            if f.typed_config.type_url == WASM_FILTER_TYPE:
                _, text = plugin_config_from_wasm(f)
                out.append((f"{BOOTSTRAP.name}: listener {listener}, filter {f.name}", text))
    for d in docs_by_kind(ISTIO).get("WasmPlugin", []):
        out.append((f"{ISTIO.name}: WasmPlugin {d['metadata']['name']}", json.dumps(d["spec"]["pluginConfig"])))
    for d in docs_by_kind(ENVOY_GATEWAY).get("EnvoyExtensionPolicy", []):
        for w in d["spec"]["wasm"]:
            out.append((f"{ENVOY_GATEWAY.name}: EnvoyExtensionPolicy {d['metadata']['name']} wasm {w['name']}",
                        json.dumps(w["config"])))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Envoy static bootstrap


def test_bootstrap_parses_with_envoys_schema():
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    assert [c.name for c in bootstrap.static_resources.clusters] == ["warden-control", "tools"]
    assert len(bootstrap.static_resources.listeners) == 1
    # Admin stays on loopback.
    assert bootstrap.admin.address.socket_address.address == "127.0.0.1"


def test_bootstrap_schema_check_is_strict():
    """The schema check would catch a typo: an unknown field or an unknown type URL is refused."""
    doc = load_one(BOOTSTRAP)
    wasm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]

    typo = copy.deepcopy(doc)
    typo_wasm = typo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    typo_wasm["http_filters"][0]["typed_config"]["config"]["failure_polcy"] = "FAIL_CLOSED"
    with pytest.raises(json_format.ParseError, match="failure_polcy"):
        parse_bootstrap(typo)

    bad_enum = copy.deepcopy(doc)
    bad_wasm = bad_enum["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    bad_wasm["http_filters"][0]["typed_config"]["config"]["failure_policy"] = "FAIL_CLOSE"
    with pytest.raises(json_format.ParseError):
        parse_bootstrap(bad_enum)

    unknown_type = copy.deepcopy(doc)
    t = unknown_type["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    t["http_filters"][0]["typed_config"]["@type"] = wasm["typed_config"]["@type"] + "Filter"
    with pytest.raises(Exception, match="WasmFilter"):
        parse_bootstrap(unknown_type)


def test_bootstrap_wasm_filter_is_fail_closed_and_before_the_router():
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    hcms = bootstrap_wasm_filters(bootstrap)
    assert len(hcms) == 1
    _, hcm, filters = hcms[0]
    types = [f.typed_config.type_url for f in filters]
    assert types.count(WASM_FILTER_TYPE) == 1
    assert types[-1] == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "router must be last"
    wasm_filter = filters[types.index(WASM_FILTER_TYPE)]
    config, _ = plugin_config_from_wasm(wasm_filter)
    assert config.failure_policy == wasm_pb2.FAIL_CLOSED
    assert not config.fail_open
    # The filter decides on headers only; Envoy's default (no body callbacks while paused) is what it expects.
    # (a google.protobuf.BoolValue: unset means false)
    assert not config.HasField("allow_on_headers_stop_iteration") or not config.allow_on_headers_stop_iteration.value
    assert config.root_id == "warden"
    assert config.vm_config.runtime == "envoy.wasm.runtime.v8"
    assert config.vm_config.code.local.filename.endswith("/warden.wasm")


def test_bootstrap_access_log_prints_the_decision_record():
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    _, hcm, _ = bootstrap_wasm_filters(bootstrap)[0]
    formats = []
    for log in hcm.access_log:
        fal = file_pb2.FileAccessLog()
        assert log.typed_config.Unpack(fal), log.typed_config.type_url
        formats.append(fal.log_format.text_format_source.inline_string)
    assert any(DECISION_FILTER_STATE in f for f in formats), formats


def test_bootstrap_control_cluster_exists():
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    clusters = {c.name: c for c in bootstrap.static_resources.clusters}
    _, text = plugin_config_from_wasm(
        next(f for f in bootstrap_wasm_filters(bootstrap)[0][2] if f.typed_config.type_url == WASM_FILTER_TYPE))
    control = json.loads(text)["control"]
    assert control["cluster"] in clusters, f"control.cluster {control['cluster']!r} is not a cluster of the bootstrap"
    # Every route goes to a defined cluster.
    _, hcm, _ = bootstrap_wasm_filters(bootstrap)[0]
    for vh in hcm.route_config.virtual_hosts:
        for r in vh.routes:
            assert r.route.cluster in clusters


# ---------------------------------------------------------------------------------------------------------------
# Istio


WASMPLUGIN_SPEC_FIELDS = {
    "selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret", "verificationKey",
    "pluginConfig", "pluginName", "phase", "priority", "failStrategy", "vmConfig", "match", "type",
}
SERVICEENTRY_SPEC_FIELDS = {
    "hosts", "addresses", "ports", "location", "resolution", "endpoints", "workloadSelector", "exportTo",
    "subjectAltNames",
}


def test_istio_resources():
    kinds = docs_by_kind(ISTIO)
    assert sorted(kinds) == ["ServiceEntry", "WasmPlugin"]
    (plugin,) = kinds["WasmPlugin"]
    assert plugin["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert plugin["metadata"]["name"] and plugin["metadata"]["namespace"]
    spec = plugin["spec"]
    assert set(spec) <= WASMPLUGIN_SPEC_FIELDS, set(spec) - WASMPLUGIN_SPEC_FIELDS
    assert spec["url"].startswith("oci://")
    assert spec["phase"] == "AUTHZ"
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["pluginName"] == "warden"
    assert spec["type"] == "HTTP"
    assert spec["selector"]["matchLabels"], "a WasmPlugin without selector applies to every workload"
    assert isinstance(spec["pluginConfig"], dict)

    for entry in kinds["ServiceEntry"]:
        assert entry["apiVersion"] in ("networking.istio.io/v1", "networking.istio.io/v1beta1")
        assert set(entry["spec"]) <= SERVICEENTRY_SPEC_FIELDS, set(entry["spec"]) - SERVICEENTRY_SPEC_FIELDS
        assert entry["spec"]["hosts"] and entry["spec"]["ports"]
        assert entry["spec"]["resolution"] in ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
        assert entry["metadata"]["namespace"] == plugin["metadata"]["namespace"], \
            "the ServiceEntry is exported to the gateway's namespace only"


def test_istio_control_cluster_is_the_one_istio_generates():
    kinds = docs_by_kind(ISTIO)
    generated = {
        f"outbound|{port['number']}||{host}"
        for entry in kinds["ServiceEntry"]
        for host in entry["spec"]["hosts"]
        for port in entry["spec"]["ports"]
    }
    control = kinds["WasmPlugin"][0]["spec"]["pluginConfig"]["control"]
    assert control["cluster"] in generated, f"{control['cluster']!r} not in {generated}"
    host = control["cluster"].split("||", 1)[1]
    assert control["authority"].split(":")[0] == host


# ---------------------------------------------------------------------------------------------------------------
# Envoy Gateway


WASM_FIELDS = {"name", "rootID", "code", "config", "failOpen"}


def test_envoy_gateway_extension_policy():
    kinds = docs_by_kind(ENVOY_GATEWAY)
    assert sorted(kinds) == ["EnvoyExtensionPolicy", "EnvoyPatchPolicy"]
    (policy,) = kinds["EnvoyExtensionPolicy"]
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    spec = policy["spec"]
    refs = spec.get("targetRefs") or [spec["targetRef"]]
    for ref in refs:
        assert ref["group"] == "gateway.networking.k8s.io" and ref["kind"] in ("Gateway", "HTTPRoute", "GRPCRoute")
        assert ref["name"]
    assert len(spec["wasm"]) == 1
    (wasm,) = spec["wasm"]
    assert set(wasm) <= WASM_FIELDS, set(wasm) - WASM_FIELDS
    assert wasm["name"] == "warden" and wasm["rootID"] == "warden"
    assert wasm["failOpen"] is False
    code = wasm["code"]
    assert code["type"] in ("Image", "HTTP")
    if code["type"] == "Image":
        assert code["image"]["url"] and "http" not in code
        assert "://" not in code["image"]["url"], "Envoy Gateway takes registry/image:tag, without a scheme"
    else:
        assert code["http"]["url"].startswith("https://") and "image" not in code
    assert isinstance(wasm["config"], dict)


def test_envoy_gateway_patch_adds_the_control_cluster():
    kinds = docs_by_kind(ENVOY_GATEWAY)
    (patch,) = kinds["EnvoyPatchPolicy"]
    (policy,) = kinds["EnvoyExtensionPolicy"]
    assert patch["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert patch["metadata"]["namespace"] == policy["metadata"]["namespace"]
    spec = patch["spec"]
    assert spec["type"] == "JSONPatch"
    assert spec["targetRef"]["kind"] == "Gateway"
    assert spec["targetRef"]["name"] in {r["name"] for r in policy["spec"]["targetRefs"]}
    added = []
    for p in spec["jsonPatches"]:
        assert p["type"] == CLUSTER_TYPE
        assert p["operation"]["op"] == "add" and p["operation"]["path"] == "", "adds a whole resource"
        cluster = cluster_pb2.Cluster()
        json_format.ParseDict(p["operation"]["value"], cluster)  # Envoy's schema, strict
        assert cluster.name == p["name"]
        assert cluster.load_assignment.cluster_name == cluster.name
        added.append(cluster.name)
    control = policy["spec"]["wasm"][0]["config"]["control"]
    assert control["cluster"] in added


# ---------------------------------------------------------------------------------------------------------------
# Every embedded plugin configuration


def test_every_file_embeds_a_plugin_configuration():
    sources = [s for s, _ in embedded_plugin_configs()]
    for path in (BOOTSTRAP, ISTIO, ENVOY_GATEWAY):
        assert any(s.startswith(path.name + ":") for s in sources), f"{path}: no plugin configuration found"


@pytest.mark.parametrize("source,text", [pytest.param(s, t, id=s.split(":")[0]) for s, t in embedded_plugin_configs()])
def test_plugin_configuration_fields_are_known_to_the_filter(source, text):
    config = json.loads(text)
    assert isinstance(config, dict), source
    top, control = raw_struct_fields("RawConfig"), raw_struct_fields("RawControl")
    assert set(config) <= top, f"{source}: unknown fields {set(config) - top}"
    assert set(config.get("control", {})) <= control, f"{source}: unknown control fields"
    for required in ("environment", "authority", "bundle_keys", "control"):
        assert required in config, f"{source}: no {required}"
    assert config["mode"] == "enforce"
    # Every example pins the TEST authority's public key, and no private member.
    with open(TEST_AUTHORITY_JWKS, encoding="utf-8") as f:
        test_key = json.load(f)["keys"][0]
    (key,) = config["bundle_keys"]["keys"]
    assert key == test_key, f"{source}: bundle_keys is not the TEST authority's public JWKS"
    assert "d" not in key
    assert config["authority"] == "policy.acme.example"
    assert config["control"]["path"].startswith("/bundles/") and config["control"]["path"].endswith(".jws")


def test_all_deployments_carry_the_same_policy_settings():
    """The three platforms differ in where the control endpoint is, not in how the filter behaves."""
    configs = [json.loads(t) for _, t in embedded_plugin_configs()]
    ignore_top = {"control", "log_decisions"}
    ignore_control = {"cluster", "authority"}
    first = configs[0]
    for c in configs[1:]:
        assert {k: v for k, v in c.items() if k not in ignore_top} == \
            {k: v for k, v in first.items() if k not in ignore_top}
        assert {k: v for k, v in c["control"].items() if k not in ignore_control} == \
            {k: v for k, v in first["control"].items() if k not in ignore_control}


# ---------------------------------------------------------------------------------------------------------------
# Compose and Dockerfile (not run here: no container engine)


def test_compose_matches_the_bootstrap():
    compose = load_one(COMPOSE)
    services = compose["services"]
    assert {"envoy", "warden-control", "tools"} <= set(services)
    bootstrap = parse_bootstrap(load_one(BOOTSTRAP))
    for cluster in bootstrap.static_resources.clusters:
        for locality in cluster.load_assignment.endpoints:
            for ep in locality.lb_endpoints:
                addr = ep.endpoint.address.socket_address
                assert addr.address in services, f"cluster {cluster.name}: {addr.address} is not a compose service"
    # warden serve listens where the warden-control cluster points.
    control_port = next(c for c in bootstrap.static_resources.clusters if c.name == "warden-control") \
        .load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
    script = services["warden-control"]["command"][0]
    assert f"--listen 0.0.0.0:{control_port}" in script
    assert "--allow-non-loopback" in script
    # Compose interpolates $VAR: the script must escape every dollar sign.
    assert not re.search(r"(?<!\$)\$(?!\$)", script.replace("$$", ""))
    # The envoy service runs this very bootstrap, and publishes only on loopback.
    assert "./envoy.yaml:/etc/envoy/envoy.yaml:ro" in services["envoy"]["volumes"]
    for svc in services.values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_dockerfile_has_the_targets_compose_builds():
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M))
    for name, svc in load_one(COMPOSE)["services"].items():
        if "build" in svc:
            assert svc["build"]["dockerfile"] == "envoy/Dockerfile", name
            assert svc["build"]["target"] in targets, name


# ---------------------------------------------------------------------------------------------------------------
# envoy/ratelimit/: Envoy's rate-limit filters keyed on the headers Warden sets (x-warden-agent, -tool, -task).

RATELIMIT_DIR = ENVOY_DIR / "ratelimit"
WARDEN_HEADERS = {"x-warden-agent", "x-warden-tool", "x-warden-task"}


def _register_ratelimit_types():
    # Imported for their side effect: the typed configs of the rate-limit filters and the gRPC cluster's options.
    from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
    from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2  # noqa: F401
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401


def _hcm(doc):
    listener = doc["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _with_filter_after_warden(doc, http_filter):
    filters = _hcm(doc)["http_filters"]
    at = [f["name"] for f in filters].index("warden")
    filters.insert(at + 1, http_filter)
    return doc


def _header_actions(rate_limits):
    return [a["request_headers"] for rl in rate_limits for a in rl["actions"]]


def test_local_ratelimit_filter_parses_after_warden_with_envoys_schema():
    _register_ratelimit_types()
    local = load_one(RATELIMIT_DIR / "local-ratelimit-filter.yaml")
    doc = _with_filter_after_warden(load_one(BOOTSTRAP), copy.deepcopy(local))
    parse_bootstrap(doc)
    # Its descriptors come only from Warden's headers, and every descriptor entry is a key an action sends.
    actions = _header_actions(local["typed_config"]["rate_limits"])
    assert {a["header_name"] for a in actions} <= WARDEN_HEADERS
    keys = {a["descriptor_key"] for a in actions}
    for d in local["typed_config"]["descriptors"]:
        assert {e["key"] for e in d["entries"]} <= keys, d


def test_global_ratelimit_parts_merge_into_the_bootstrap_and_parse():
    _register_ratelimit_types()
    parts = load_one(RATELIMIT_DIR / "global-ratelimit.yaml")
    assert set(parts) == {"http_filter", "route_rate_limits", "cluster"}
    doc = _with_filter_after_warden(load_one(BOOTSTRAP), copy.deepcopy(parts["http_filter"]))
    route = _hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    route["rate_limits"] = copy.deepcopy(parts["route_rate_limits"])
    doc["static_resources"]["clusters"].append(copy.deepcopy(parts["cluster"]))
    parse_bootstrap(doc)
    cfg = parts["http_filter"]["typed_config"]
    assert cfg["failure_mode_deny"] is True, "the global limit must fail closed"
    assert cfg["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] == parts["cluster"]["name"]
    # The cluster parses on its own too (as Envoy Gateway patches add clusters).
    json_format.ParseDict(copy.deepcopy(parts["cluster"]), cluster_pb2.Cluster())
    assert {a["header_name"] for a in _header_actions(parts["route_rate_limits"])} <= WARDEN_HEADERS


def test_ratelimit_service_config_matches_the_descriptors_envoy_sends():
    parts = load_one(RATELIMIT_DIR / "global-ratelimit.yaml")
    service = load_one(RATELIMIT_DIR / "ratelimit-service.yaml")
    assert service["domain"] == parts["http_filter"]["typed_config"]["domain"]
    sent = [[a["request_headers"]["descriptor_key"] for a in rl["actions"]] for rl in parts["route_rate_limits"]]
    units = {"second", "minute", "hour", "day"}

    def walk(nodes, path):
        for n in nodes:
            assert set(n) <= {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}, n
            here = path + [n["key"]]
            assert any(s[: len(here)] == here for s in sent), f"no action sends the descriptor path {here}"
            if "rate_limit" in n:
                assert n["rate_limit"]["unit"] in units
                assert int(n["rate_limit"]["requests_per_unit"]) > 0
            walk(n.get("descriptors", []), here)

    walk(service["descriptors"], [])
