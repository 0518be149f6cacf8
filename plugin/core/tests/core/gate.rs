//! Configuration loading and the gate end to end, natively: a bundle signed with the TEST-ONLY authority key, agent
//! tokens signed with the TEST-ONLY issuer key, requests in, decisions, replies and records out.

use serde_json::{json, Value};
use warden_core::activation::{load, Loaded};
use warden_core::envelope::{sign, sign_typed, SigningKey};
use warden_core::facts::Peer;
use warden_core::gate::{record, Credentials, Edit, Field, Flow, Next, Request, RequestView, TokenHeader};
use warden_core::time::parse_rfc3339;

const AUTHORITY_JWK: &str = include_str!("../../../../policies/examples/keys/TEST-ONLY-authority.jwk.json");
const AUTHORITY_JWKS: &str = include_str!("../../../../policies/examples/keys/TEST-ONLY-authority.jwks.json");
const ISSUER_JWK: &str = include_str!("../../../../policies/examples/keys/TEST-ONLY-issuer-acme-workload.jwk.json");
const ISSUER_PUBLIC_JWK: &str =
    include_str!("../../../../policies/examples/keys/TEST-ONLY-issuer-acme-workload.public.jwk.json");

const SUPPORT_BOT: &str = "spiffe://acme.example/agents/support/bot-1";

fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

fn now() -> i64 {
    t("2026-12-01T00:00:00Z")
}

fn key(jwk: &str) -> SigningKey {
    SigningKey::from_jwk(&serde_json::from_str(jwk).unwrap()).unwrap()
}

fn bundle() -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": 7,
        "issued_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-01-01T00:00:00Z",
        "owner": "security@acme.example",
        "authority": "policy.acme.example",
        "issuers": [{
            "id": "acme-workload",
            "iss": "https://spire.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [serde_json::from_str::<Value>(ISSUER_PUBLIC_JWK).unwrap()]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 900, "profile": "spiffe_jwt_svid",
            "claims": {"agent_id": "sub", "task_id": "task_id", "task_purpose": "task_purpose"}
        }],
        "approvers": [{
            "id": "payments-approvals",
            "iss": "https://approvals.acme.example",
            "jwks": {"keys": [serde_json::from_str::<Value>(ISSUER_PUBLIC_JWK).unwrap()]},
            "algorithms": ["EdDSA"],
            "max_approval_age_seconds": 300
        }],
        "tools": [
            {"id": "crm.contacts.read", "sensitivity": "read",
             "http": [{"host": "crm.acme.example", "methods": ["GET"], "path": "/contacts/{id}"}]},
            {"id": "crm.contacts.update", "sensitivity": "write",
             "http": [{"host": "crm.acme.example", "methods": ["PATCH"], "path": "/contacts/{id}"}]},
            {"id": "pay.refunds.create", "sensitivity": "payment",
             "http": [{"host": "pay.acme.example", "methods": ["POST"], "path": "/refunds"}]}
        ],
        "rules": [
            {"id": "support-no-writes", "effect": "deny",
             "agents": ["spiffe://acme.example/agents/support/*"], "sensitivities": ["write"]},
            {"id": "refunds-step-up", "effect": "step_up", "agents": ["*"], "tools": ["pay.refunds.create"],
             "step_up": {"approvers": ["payments-approvals"]}},
            {"id": "support-reads", "effect": "allow",
             "agents": ["spiffe://acme.example/agents/support/*"], "tools": ["crm.*"], "environments": ["prod"]}
        ]
    })
}

fn signed(bundle: &Value) -> String {
    sign(bundle.to_string().as_bytes(), &key(AUTHORITY_JWK))
}

fn config(extra: Value) -> Vec<u8> {
    let mut c = json!({
        "environment": "prod",
        "authority": "policy.acme.example",
        "bundle_keys": serde_json::from_str::<Value>(AUTHORITY_JWKS).unwrap(),
        "inline_bundle": signed(&bundle()),
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string().into_bytes()
}

fn loaded(extra: Value) -> Loaded {
    load(&config(extra), now()).unwrap()
}

/// An agent token for the support bot: a JWT-SVID (`typ` `JWT`) signed with the example issuer's TEST key.
fn token(claims: Value) -> String {
    let mut c = json!({
        "iss": "https://spire.acme.example", "sub": SUPPORT_BOT, "aud": "warden",
        "iat": now() - 60, "exp": now() + 600, "jti": "jti-secret-1",
        "task_id": "T-1042", "task_purpose": "customer-support"
    });
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    jwt(&c)
}

/// `claims` signed by the example issuer's TEST key as an EdDSA JWT with `typ` `JWT`.
fn jwt(claims: &Value) -> String {
    sign_typed(claims.to_string().as_bytes(), &key(ISSUER_JWK), "JWT")
}

fn bearer() -> String {
    format!("Bearer {}", token(json!({})))
}

/// Header pairs as `get_http_request_headers_bytes` returns them.
type Headers = Vec<(String, Vec<u8>)>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
}

fn get(path: &str, auth: &str) -> Headers {
    headers(&[(":method", "GET"), (":path", path), (":authority", "crm.acme.example"), ("authorization", auth)])
}

/// What one request came to.
#[derive(Debug)]
struct Seen {
    status: u16,
    reason: &'static str,
    rule: String,
    tool: Option<String>,
    agent: Option<String>,
    rewrite: Option<String>,
    record: Value,
    body: Option<Value>,
}

fn run_at(l: &Loaded, h: &[(String, Vec<u8>)], at: i64) -> Seen {
    let config = &l.config.gate;
    let view = RequestView::scan(h, config);
    let time_ns = u64::try_from(at).unwrap() * 1_000_000_000;
    let bundle = l.active.as_ref().map(|a| &a.bundle);
    let request = Request {
        view: &view,
        peer: &Peer::given(None),
        credentials: Credentials::Tokens(None),
        decision_id: "00000000-0000-4000-8000-000000000001".to_string(),
        time_ns,
        end_of_stream: true,
    };
    let (flow, step) = Flow::on_request_headers(config, bundle, request);
    let record: Value =
        serde_json::from_str(&record::build(&flow.record(config, bundle, "vm-00000001", time_ns))).unwrap();
    let d = flow.decision();
    let body = match &step.next {
        Next::Reply(r) => Some(serde_json::from_slice(&r.body).unwrap()),
        _ => None,
    };
    let mut rewrite = None;
    flow.for_each_header_edit(config, |e| {
        if let Edit::Path(p) = e {
            rewrite = Some(p.to_string());
        }
    });
    Seen {
        status: d.http_status(),
        reason: d.reason.code(),
        rule: d.rule_id().to_string(),
        tool: flow.tool().zip(bundle).map(|(t, b)| b.tool_id(t).to_string()),
        agent: flow.agent().map(|a| a.id.clone()),
        rewrite,
        record,
        body,
    }
}

fn run(l: &Loaded, h: &[(String, Vec<u8>)]) -> Seen {
    run_at(l, h, now())
}

#[test]
fn configuration_activates_the_inline_bundle() {
    let l = loaded(json!({}));
    let active = l.active.as_ref().unwrap();
    assert_eq!(active.bundle.revision, 7);
    assert_eq!(active.key_id, "warden-test-authority-1");
    assert_eq!(active.digest.len(), 64);
    let control = json!({"cluster": "warden-control", "authority": "control.acme.example"});
    assert!(loaded(json!({"inline_bundle": null, "control": control})).active.is_none());
    let neither = load(&config(json!({"inline_bundle": null})), now()).unwrap_err().to_string();
    assert!(neither.starts_with("neither `inline_bundle` nor `control` is set"), "{neither}");
}

#[test]
fn bad_bundles_refuse_the_configuration() {
    let other = SigningKey::generate(warden_core::envelope::Algorithm::EdDSA, "warden-test-authority-1").unwrap();
    let mut tampered = signed(&bundle());
    tampered.insert(tampered.find('.').unwrap() + 5, 'A');
    let mut expired = bundle();
    expired["expires_at"] = json!("2026-11-30T00:00:00Z");
    let mut foreign = bundle();
    foreign["authority"] = json!("policy.evil.example");
    let mut invalid = bundle();
    invalid["rules"][0]["tools"] = json!(["crm.nothing"]);
    invalid["rules"][1]["tools"] = json!(["pay.nothing"]);
    let cases: Vec<(String, &str)> = vec![
        ("not a jws".to_string(), "field `inline_bundle`: signed bundle: not a JWS compact serialization"),
        (
            sign(bundle().to_string().as_bytes(), &other),
            "field `inline_bundle`: signed bundle: signature does not verify",
        ),
        (tampered, "field `inline_bundle`: signed bundle: "),
        (signed(&expired), "field `inline_bundle`: signed bundle: expired at 2026-11-30T00:00:00Z"),
        (signed(&foreign), "field `inline_bundle`: signed bundle: /authority is \"policy.evil.example\""),
        (signed(&invalid), "field `inline_bundle`: bundle revision 7 is not valid: /rules/0/tools/0: "),
    ];
    for (jws, want) in cases {
        let err = load(&config(json!({"inline_bundle": jws})), now()).unwrap_err().to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
    let err = load(&config(json!({"inline_bundle": signed(&invalid)})), now()).unwrap_err().to_string();
    assert!(err.contains("; /rules/1/tools/0: "), "every validation error on the line: {err}");
}

#[test]
fn requests_and_verdicts() {
    let l = loaded(json!({}));
    let b = bearer();
    let cases: Vec<(&str, Headers, u16, &str, &str)> = vec![
        ("allowed read", get("/contacts/42", &b), 200, "allowed_by_rule", "support-reads"),
        (
            "deny rule beats allow",
            headers(&[
                (":method", "PATCH"),
                (":path", "/contacts/42"),
                (":authority", "crm.acme.example"),
                ("authorization", &b),
            ]),
            403,
            "denied_by_rule",
            "support-no-writes",
        ),
        (
            "step-up",
            headers(&[
                (":method", "POST"),
                (":path", "/refunds"),
                (":authority", "pay.acme.example"),
                ("authorization", &b),
            ]),
            403,
            "step_up_required",
            "refunds-step-up",
        ),
        ("unknown tool", get("/accounts/1", &b), 403, "unknown_tool", "default"),
        (
            "no token",
            headers(&[(":method", "GET"), (":path", "/contacts/1"), (":authority", "crm.acme.example")]),
            401,
            "identity_missing",
            "default",
        ),
        ("not bearer", get("/contacts/42", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"), 401, "token_malformed", "default"),
        ("garbage token", get("/contacts/42", "Bearer abc.def"), 401, "token_malformed", "default"),
        (
            "expired token",
            get("/contacts/42", &format!("Bearer {}", token(json!({"iat": now() - 900, "exp": now() - 300})))),
            401,
            "token_expired",
            "default",
        ),
        (
            "wrong audience",
            get("/contacts/42", &format!("Bearer {}", token(json!({"aud": "other"})))),
            401,
            "token_wrong_audience",
            "default",
        ),
        (
            "repeated token header",
            headers(&[
                (":method", "GET"),
                (":path", "/contacts/1"),
                (":authority", "crm.acme.example"),
                ("authorization", &b),
                ("authorization", &b),
            ]),
            401,
            "token_ambiguous",
            "default",
        ),
        ("encoded slash", get("/contacts%2F42", &b), 400, "path_encoded_slash", "default"),
        ("above root", get("/../contacts/42", &b), 400, "path_above_root", "default"),
        (
            "missing authority",
            headers(&[(":method", "GET"), (":path", "/contacts/1"), ("authorization", &b)]),
            400,
            "bad_request",
            "default",
        ),
        (
            "repeated :path",
            headers(&[
                (":method", "GET"),
                (":path", "/contacts/1"),
                (":path", "/contacts/2"),
                (":authority", "crm.acme.example"),
                ("authorization", &b),
            ]),
            400,
            "bad_request",
            "default",
        ),
    ];
    for (name, h, status, reason, rule) in cases {
        let seen = run(&l, &h);
        assert_eq!((seen.status, seen.reason, seen.rule.as_str()), (status, reason, rule), "{name}: {seen:?}");
        assert_eq!(seen.record["reason"], reason, "{name}");
        assert_eq!(seen.record["rule"], rule, "{name}");
        if status == 200 {
            assert!(seen.body.is_none());
        } else {
            let body = seen.body.unwrap();
            assert_eq!(body["reason"], reason, "{name}");
            assert_eq!(body["revision"], 7, "{name}");
        }
    }
}

#[test]
fn an_allowed_request_is_recorded_in_full() {
    let l = loaded(json!({}));
    let seen = run(&l, &get("/contacts/./42?fields=name", &bearer()));
    assert_eq!(seen.status, 200);
    assert_eq!(seen.tool.as_deref(), Some("crm.contacts.read"));
    assert_eq!(seen.agent.as_deref(), Some(SUPPORT_BOT));
    assert_eq!(seen.rewrite.as_deref(), Some("/contacts/42?fields=name"));
    assert_eq!(
        seen.record,
        json!({
            "type": "warden.decision",
            "decision_id": "00000000-0000-4000-8000-000000000001",
            "timestamp": "2026-12-01T00:00:00.000Z",
            "environment": "prod",
            "vm": "vm-00000001",
            "agent": SUPPORT_BOT,
            "issuer": "acme-workload",
            "task": {"id": "T-1042", "purpose": "customer-support"},
            "tool": "crm.contacts.read",
            "method": "GET",
            "path": "/contacts/42",
            "host": "crm.acme.example",
            "decision": "allow",
            "mode": "enforce",
            "rule": "support-reads",
            "reason": "allowed_by_rule",
            "bundles": {"warden": {"revision": 7}},
            "latency_ns": 0,
            "approval": null,
            "exception": null,
            "shadow": null,
            "arguments_digest": null
        })
    );
    let line = seen.record.to_string();
    assert!(!line.contains("jti-secret-1"));
    assert!(!line.contains("eyJ"), "no token material");
}

#[test]
fn path_is_rewritten_only_when_normalization_changes_it() {
    let l = loaded(json!({}));
    let b = bearer();
    assert_eq!(run(&l, &get("/contacts/42", &b)).rewrite, None);
    assert_eq!(run(&l, &get("/contacts/42?x=%2F", &b)).rewrite, None);
    assert_eq!(run(&l, &get("//contacts/%34%32", &b)).rewrite.as_deref(), Some("/contacts/42"));
    let bad = run(&l, &get("/contacts%2F42?token=x", &b));
    assert_eq!(bad.rewrite, None);
    assert_eq!(bad.record["path"], "/contacts%2F42", "raw path without the query");
}

#[test]
fn bundle_state_comes_first() {
    let control = json!({"cluster": "warden-control", "authority": "control.acme.example"});
    let none = loaded(json!({"inline_bundle": null, "control": control}));
    let seen = run(&none, &get("/%2F", "x"));
    assert_eq!((seen.status, seen.reason), (503, "no_active_bundle"));
    assert_eq!(seen.body.unwrap()["revision"], Value::Null);
    assert_eq!(seen.record["bundles"], json!({}));

    let l = loaded(json!({"bundle_grace_seconds": 60}));
    let h = get("/contacts/42", &bearer());
    let expires = t("2027-01-01T00:00:00Z");
    // Inside the grace the bundle is enforced (the token itself has long expired by then).
    assert_eq!(run_at(&l, &h, expires + 60).reason, "token_expired");
    let seen = run_at(&l, &h, expires + 61);
    assert_eq!((seen.status, seen.reason), (503, "bundle_expired"));
    assert_eq!(seen.record["bundles"], json!({"warden": {"revision": 7}}));
}

#[test]
fn shadow_mode_records_what_would_happen() {
    let l = loaded(json!({"mode": "shadow"}));
    let seen = run(&l, &get("/accounts/1", &bearer()));
    assert_eq!(seen.status, 403);
    assert_eq!(seen.record["decision"], "would_deny");
    assert_eq!(seen.record["mode"], "shadow");
    let b = bearer();
    let step = headers(&[
        (":method", "POST"),
        (":path", "/refunds"),
        (":authority", "pay.acme.example"),
        ("authorization", &b),
    ]);
    assert_eq!(run(&l, &step).record["decision"], "would_step_up");
    assert_eq!(run(&l, &get("/contacts/1", &b)).record["decision"], "allow");
}

#[test]
fn environment_is_a_fact() {
    let staging = loaded(json!({"environment": "staging"}));
    let seen = run(&staging, &get("/contacts/42", &bearer()));
    assert_eq!((seen.status, seen.reason), (403, "no_matching_rule"));
    assert_eq!(seen.record["environment"], "staging");
}

#[test]
fn custom_token_header() {
    let l = loaded(json!({"token_header": "X-Agent-Token"}));
    let tok = token(json!({}));
    let h = |v: &str| {
        headers(&[
            (":method", "GET"),
            (":path", "/contacts/1"),
            (":authority", "crm.acme.example"),
            ("x-agent-token", v),
        ])
    };
    assert_eq!(run(&l, &h(&tok)).status, 200, "bare token");
    assert_eq!(run(&l, &h(&format!("Bearer {tok}"))).status, 200, "bearer token");
    assert_eq!(run(&l, &h("a b c")).reason, "token_malformed");
    // `authorization` is not the token header here.
    assert_eq!(run(&l, &get("/contacts/1", &format!("Bearer {tok}"))).reason, "identity_missing");
}

#[test]
fn header_scan_is_one_pass_and_byte_safe() {
    let h = vec![
        (":method".to_string(), b"GET".to_vec()),
        (":path".to_string(), b"/a".to_vec()),
        (":authority".to_string(), vec![0xff, 0xfe]),
        ("authorization".to_string(), vec![0xc3, 0x28]),
        ("x-warden-agent".to_string(), b"spoofed".to_vec()),
        ("X-Warden-Task".to_string(), b"spoofed".to_vec()),
        ("x-warden-agent".to_string(), b"again".to_vec()),
        ("x-wardenish".to_string(), b"not ours".to_vec()),
    ];
    let req = RequestView::scan(&h, &warden_core::config::GateConfig::new("prod"));
    assert_eq!(req.method, Field::Present("GET"));
    assert_eq!(req.authority, Field::Unreadable);
    assert_eq!(req.token, TokenHeader::One(&[0xc3, 0x28]));
    assert_eq!(req.reserved, vec!["x-warden-agent", "X-Warden-Task"]);

    let l = loaded(json!({}));
    let bad_token = get("/contacts/1", "");
    let mut bad_token: Vec<(String, Vec<u8>)> = bad_token.into_iter().filter(|(k, _)| k != "authorization").collect();
    bad_token.push(("authorization".to_string(), vec![b'B', 0xff]));
    assert_eq!(run(&l, &bad_token).reason, "token_malformed");
}

/// What a fetched bundle means next to the active one: each refusal has its failure cause.
#[test]
fn candidates_from_the_control_endpoint() {
    use warden_core::activation::{check_candidate, Candidate, RejectCause as Cause};
    use warden_core::envelope::Algorithm;

    let l = loaded(json!({}));
    let cfg = &l.config;
    let active = l.active.as_ref().unwrap();
    let cause = |r: Result<Candidate, warden_core::activation::Rejected>| match r {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(f) => (f.cause, f.detail),
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = bundle();
        f(&mut b);
        b
    };

    // The same bytes: unchanged. A higher revision: newer.
    assert!(matches!(
        check_candidate(cfg, Some(active), None, signed(&bundle()).as_bytes(), now()),
        Ok(Candidate::Unchanged)
    ));
    let v8 = with(&|b| b["revision"] = json!(8));
    match check_candidate(cfg, Some(active), None, signed(&v8).as_bytes(), now()) {
        Ok(Candidate::Newer(a)) => assert_eq!(a.bundle.revision, 8),
        other => panic!("{other:?}"),
    }
    // No active bundle: anything valid is newer.
    assert!(matches!(check_candidate(cfg, None, None, signed(&bundle()).as_bytes(), now()), Ok(Candidate::Newer(_))));

    // Rollback: older, or the same revision with other contents.
    let v6 = with(&|b| b["revision"] = json!(6));
    let (c, d) = cause(check_candidate(cfg, Some(active), None, signed(&v6).as_bytes(), now()));
    assert_eq!(
        (c, d.as_str()),
        (Cause::Rollback, "revision 6 is older than the active revision 7: refused (rollback)")
    );
    let v7b = with(&|b| b["owner"] = json!("mallory@acme.example"));
    let (c, d) = cause(check_candidate(cfg, Some(active), None, signed(&v7b).as_bytes(), now()));
    assert_eq!(c, Cause::Rollback);
    assert!(d.starts_with("revision 7 has different contents (sha256 "), "{d}");

    // Transport-level garbage, unsigned JSON, foreign keys, bad signatures, expiry, validation.
    assert_eq!(cause(check_candidate(cfg, Some(active), None, b"<html>oops</html>", now())).0, Cause::Malformed);
    assert_eq!(cause(check_candidate(cfg, Some(active), None, v8.to_string().as_bytes(), now())).0, Cause::Signature);
    let stranger = SigningKey::generate(Algorithm::EdDSA, "stranger").unwrap();
    let (c, d) =
        cause(check_candidate(cfg, Some(active), None, sign(v8.to_string().as_bytes(), &stranger).as_bytes(), now()));
    assert_eq!(c, Cause::UnknownKey, "{d}");
    let impostor = SigningKey::generate(Algorithm::EdDSA, "warden-test-authority-1").unwrap();
    let forged = sign(v8.to_string().as_bytes(), &impostor);
    assert_eq!(cause(check_candidate(cfg, Some(active), None, forged.as_bytes(), now())).0, Cause::Signature);
    let expired = with(&|b| {
        b["revision"] = json!(9);
        b["expires_at"] = json!("2026-11-30T00:00:00Z");
    });
    assert_eq!(cause(check_candidate(cfg, Some(active), None, signed(&expired).as_bytes(), now())).0, Cause::Expired);
    let invalid = with(&|b| {
        b["revision"] = json!(9);
        b["rules"][0]["tools"] = json!(["no.such.tool"]);
        b["rules"][0].as_object_mut().unwrap().remove("sensitivities");
    });
    let (c, d) = cause(check_candidate(cfg, Some(active), None, signed(&invalid).as_bytes(), now()));
    assert_eq!(c, Cause::Invalid);
    assert!(d.starts_with("bundle revision 9 is not valid: /rules/0/tools/0"), "{d}");
    let foreign = with(&|b| {
        b["revision"] = json!(9);
        b["authority"] = json!("policy.evil.example");
    });
    assert_eq!(cause(check_candidate(cfg, Some(active), None, signed(&foreign).as_bytes(), now())).0, Cause::Invalid);

    // A key the active bundle revokes is refused as unknown, even for a higher revision.
    let revoking = with(&|b| {
        b["revision"] = json!(10);
        b["revocations"] = json!({"signing_keys": ["old-key"]});
    });
    let r10 = match check_candidate(cfg, Some(active), None, signed(&revoking).as_bytes(), now()) {
        Ok(Candidate::Newer(a)) => a,
        other => panic!("{other:?}"),
    };
    let old_key = SigningKey::generate(Algorithm::EdDSA, "old-key").unwrap();
    let mut keys = serde_json::from_str::<Value>(AUTHORITY_JWKS).unwrap();
    keys["keys"].as_array_mut().unwrap().push(old_key.public_jwk());
    let l2 = loaded(json!({"bundle_keys": keys}));
    let v11 = with(&|b| b["revision"] = json!(11));
    let by_old = sign(v11.to_string().as_bytes(), &old_key);
    assert!(matches!(
        check_candidate(&l2.config, Some(&r10), None, by_old.as_bytes(), now()).map_err(|f| f.cause),
        Err(Cause::UnknownKey)
    ));
    assert!(matches!(
        check_candidate(&l2.config, l2.active.as_ref(), None, by_old.as_bytes(), now()),
        Ok(Candidate::Newer(_))
    ));
}

/// The driver runs the whole pipeline with an in-memory store: a step-up call, its approval minted from the reply,
/// accepted once, refused as replayed the second time (single use through the claim the gate asks for).
#[test]
fn the_driver_claims_an_approval_once() {
    use warden_core::approval::{claims, mint, ApprovalGrant};
    use warden_core::gate::driver::{run, Exchange};
    use warden_core::gate::MemoryStore;

    let l = loaded(json!({}));
    let config = &l.config.gate;
    let bundle = l.active.as_ref().map(|a| &a.bundle);
    let exchange = |approval: Option<&str>| {
        let mut h = headers(&[
            (":method", "POST"),
            (":path", "/refunds"),
            (":authority", "pay.acme.example"),
            ("authorization", &bearer()),
        ]);
        if let Some(a) = approval {
            h.push(("x-warden-approval".to_string(), a.as_bytes().to_vec()));
        }
        Exchange {
            headers: h,
            body: br#"{"amount": 5}"#.to_vec(),
            peer: None,
            time_ns: u64::try_from(now()).unwrap() * 1_000_000_000,
            decision_id: "00000000-0000-4000-8000-000000000009".to_string(),
            credentials: Credentials::Tokens(None),
            response: None,
            listed: None,
        }
    };
    let mut store = MemoryStore::default();
    let first = run(config, bundle, exchange(None), &mut store);
    assert_eq!(first.flow.decision().reason.code(), "step_up_required");
    assert_eq!(first.reply.as_ref().map(|r| r.status), Some(403));
    assert!(first.forwarded.is_none(), "a refused call is not forwarded");
    let info = first.flow.step_up().expect("the reply says what to approve").clone();
    let token = mint(
        &claims(&ApprovalGrant {
            iss: "https://approvals.acme.example",
            approved_by: Some("alice@acme.example"),
            jti: "approval-1",
            issued_at: now(),
            expires_at: now() + 120,
            agent: info.agent.as_deref().unwrap(),
            task: info.task.as_deref(),
            tool: info.tool.as_deref().unwrap(),
            // Answered at the head (headers cannot be held by default): the digest is over the binding and body.
            arguments_digest: &info.binding.as_ref().unwrap().with_body(br#"{"amount": 5}"#).digest().unwrap(),
            head_digest: info.head_digest.as_deref(),
            decision_id: Some(&info.decision_id),
        }),
        &key(ISSUER_JWK),
    );
    let second = run(config, bundle, exchange(Some(&token)), &mut store);
    assert_eq!(second.flow.decision().reason.code(), "allowed_by_approval");
    assert_eq!(second.status(None), 200);
    let forwarded = second.forwarded.expect("the approved call goes on");
    assert!(!forwarded.iter().any(|(k, _)| k == "x-warden-approval"), "the approval is not forwarded");
    let record: Value = serde_json::from_str(second.record.as_deref().unwrap()).unwrap();
    assert_eq!(record["approval"]["id"], "approval-1");
    let third = run(config, bundle, exchange(Some(&token)), &mut store);
    assert_eq!(third.flow.decision().reason.code(), "approval_replayed");
    assert_eq!(third.reply.map(|r| r.status), Some(403));
}

/// Without `allow_on_headers_stop_iteration` the headers of a step-up call with a body would go upstream while the
/// body is read: the head is decided on the approval's `head_digest` first (issue 19 item 3). No approval, an
/// approval without a head claim, or one for another query: answered at the headers, nothing forwarded. The right
/// head with another body: the head goes on, the body is refused. Both right: allowed, once. With the option, the
/// whole call is decided at the end of the body and a head claim is not required.
#[test]
fn a_step_up_call_with_a_body_is_decided_at_its_head_when_headers_cannot_be_held() {
    use warden_core::approval::{claims, mint, ApprovalGrant};
    use warden_core::gate::driver::{run, Exchange};
    use warden_core::gate::{MemoryStore, StepUpInfo};

    const BODY: &[u8] = br#"{"amount": 4200}"#;
    let exchange = |path: &str, body: &[u8], approval: Option<&str>| {
        let mut h = headers(&[
            (":method", "POST"),
            (":path", path),
            (":authority", "pay.acme.example"),
            ("authorization", &bearer()),
            ("content-type", "application/json"),
        ]);
        if let Some(a) = approval {
            h.push(("x-warden-approval".to_string(), a.as_bytes().to_vec()));
        }
        Exchange {
            headers: h,
            body: body.to_vec(),
            peer: None,
            time_ns: u64::try_from(now()).unwrap() * 1_000_000_000,
            decision_id: "00000000-0000-4000-8000-00000000000a".to_string(),
            credentials: Credentials::Tokens(None),
            response: None,
            listed: None,
        }
    };
    let approve = |info: &StepUpInfo, jti: &str, body: &[u8], head: bool| {
        let binding = info.binding.as_ref().expect("a plain HTTP call's reply has its binding");
        let digest = binding.with_body(body).digest().unwrap();
        mint(
            &claims(&ApprovalGrant {
                iss: "https://approvals.acme.example",
                approved_by: None,
                jti,
                issued_at: now(),
                expires_at: now() + 120,
                agent: info.agent.as_deref().unwrap(),
                task: info.task.as_deref(),
                tool: info.tool.as_deref().unwrap(),
                arguments_digest: &digest,
                head_digest: if head { info.head_digest.as_deref() } else { None },
                decision_id: None,
            }),
            &key(ISSUER_JWK),
        )
    };
    let code = |r: &warden_core::gate::driver::Run| r.flow.decision().reason.code();

    // Headers cannot be held (the default, and the only mode under Istio).
    let l = loaded(json!({}));
    let (config, bundle) = (&l.config.gate, l.active.as_ref().map(|a| &a.bundle));
    let mut store = MemoryStore::default();
    let first = run(config, bundle, exchange("/refunds?to=a", BODY, None), &mut store);
    assert_eq!(code(&first), "step_up_required");
    assert!(first.forwarded.is_none(), "nothing goes upstream without an approval");
    let info = first.flow.step_up().unwrap().clone();
    assert_eq!(info.arguments_digest, None, "the body was not read");
    let binding = info.binding.clone().unwrap();
    assert_eq!((binding.path.as_str(), binding.body_sha256.as_deref()), ("/refunds?to=a", None));
    assert_eq!(info.head_digest.as_deref(), Some(binding.head_digest().as_str()));
    let reply: Value = serde_json::from_slice(&first.reply.as_ref().unwrap().body).unwrap();
    assert!(reply["approval"].get("arguments_digest").is_none(), "{reply}");
    assert_eq!(reply["approval"]["head_digest"], binding.head_digest());
    assert!(reply["message"].as_str().unwrap().contains("answered before the body was read"), "{reply}");

    // No head claim: refused at the head.
    let unbound =
        run(config, bundle, exchange("/refunds?to=a", BODY, Some(&approve(&info, "a1", BODY, false))), &mut store);
    assert_eq!(code(&unbound), "approval_head_unbound");
    assert!(unbound.forwarded.is_none());
    let reply: Value = serde_json::from_slice(&unbound.reply.as_ref().unwrap().body).unwrap();
    assert!(reply["message"].as_str().unwrap().contains("must also carry head_digest"), "{reply}");
    // Another query under the same approval: refused at the head.
    let good = approve(&info, "a2", BODY, true);
    let evil = run(config, bundle, exchange("/refunds?to=evil", BODY, Some(&good)), &mut store);
    assert_eq!(code(&evil), "approval_wrong_arguments");
    assert!(evil.forwarded.is_none(), "another query reaches nothing");
    // The approved head with another body: the head goes on (it is what was approved), the body is refused.
    let other = run(config, bundle, exchange("/refunds?to=a", br#"{"amount": 999999}"#, Some(&good)), &mut store);
    assert_eq!(code(&other), "approval_wrong_arguments");
    assert_eq!(other.reply.as_ref().map(|r| r.status), Some(403));
    // Both right: allowed, and the approval was not spent by the refusals above.
    let ok = run(config, bundle, exchange("/refunds?to=a", BODY, Some(&good)), &mut store);
    assert_eq!(code(&ok), "allowed_by_approval");
    assert!(ok.forwarded.is_some());
    let again = run(config, bundle, exchange("/refunds?to=a", BODY, Some(&good)), &mut store);
    assert_eq!(code(&again), "approval_replayed");

    // Headers held: decided on the whole call at the end of the body; no head claim needed, a wrong one refused.
    let held = loaded(json!({"allow_on_headers_stop_iteration": true}));
    let (config, bundle) = (&held.config.gate, held.active.as_ref().map(|a| &a.bundle));
    let mut store = MemoryStore::default();
    let first = run(config, bundle, exchange("/refunds?to=a", BODY, None), &mut store);
    let info = first.flow.step_up().unwrap().clone();
    assert!(info.arguments_digest.is_some(), "the body was read: {info:?}");
    assert_eq!(
        info.binding.as_ref().and_then(|b| b.body_sha256.clone()),
        Some(warden_core::approval::body_digest(BODY))
    );
    let ok = run(config, bundle, exchange("/refunds?to=a", BODY, Some(&approve(&info, "h1", BODY, false))), &mut store);
    assert_eq!(code(&ok), "allowed_by_approval");
    let mut wrong_head = info.clone();
    wrong_head.head_digest = Some("0".repeat(64));
    let bad =
        run(config, bundle, exchange("/refunds?to=a", BODY, Some(&approve(&wrong_head, "h2", BODY, true))), &mut store);
    assert_eq!(code(&bad), "approval_wrong_arguments");
}
