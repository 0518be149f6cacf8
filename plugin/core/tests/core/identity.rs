//! Agent token verification: real tokens minted by jsonwebtoken's encoder with keys generated here, one table of
//! every outcome, the issuer compile errors, and the header helpers.

use std::cell::RefCell;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_core::bundle::Issuer;
use warden_core::facts::{Agent, Delegation, Peer, PeerIdentity, PeerProperty, Task, TokenFailure, TxnFailure};
use warden_core::identity::{self, bearer_token, trust_domain, IssuerSet};
use warden_core::token_cache::TokenCache;

const NOW: i64 = 1_780_000_000;
const AGENT: &str = "spiffe://acme.example/agents/support/bot-1";

struct TestKey {
    encoding: EncodingKey,
    public: Value,
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).unwrap();
    s
}

fn public_jwk(encoding: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(encoding, alg).unwrap()).unwrap();
    v["kid"] = json!(kid);
    v
}

fn ed_key(kid: &str) -> TestKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed());
    let encoding = EncodingKey::from_ed_der(sk.to_pkcs8_der().unwrap().as_bytes());
    // (jsonwebtoken's Jwk::from_encoding_key only reads PKCS#8 v1; dalek writes v2 with the public key.)
    let x = b64(sk.verifying_key().as_bytes());
    let public = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": kid});
    TestKey { encoding, public }
}

fn es_key(kid: &str) -> TestKey {
    use p256::pkcs8::EncodePrivateKey;
    let sk = p256::ecdsa::SigningKey::from_slice(&seed()).unwrap();
    let encoding = EncodingKey::from_ec_der(sk.to_pkcs8_der().unwrap().as_bytes());
    let public = public_jwk(&encoding, Algorithm::ES256, kid);
    TestKey { encoding, public }
}

fn rs_key(kid: &str) -> TestKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let sk = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let encoding = EncodingKey::from_rsa_der(sk.to_pkcs1_der().unwrap().as_bytes());
    let public = public_jwk(&encoding, Algorithm::RS256, kid);
    TestKey { encoding, public }
}

struct World {
    ed: TestKey,
    ed_other: TestKey, // same kid as `ed`, another key
    es: TestKey,
    rs: TestKey,
    issuers: Vec<Issuer>,
    set: IssuerSet,
}

fn issuers_json(ed: &TestKey, es: &TestKey, rs: &TestKey) -> Value {
    let strip_alg = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("alg");
        v
    };
    json!([
        {
            "id": "acme-idp",
            "iss": "https://idp.acme.example",
            "audiences": ["warden", "gateway"],
            "jwks": {"keys": [ed.public]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 600,
            "clock_skew_seconds": 30,
            "claims": {"agent_id": "sub", "task_id": "task_id", "task_purpose": "purpose", "task_expires_at": "task_exp"},
            "profile": "oauth_access_token",
            "delegation": {"max_depth": 2}
        },
        {
            "id": "spire",
            "iss": "https://spire.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [es.public]},
            "algorithms": ["ES256"],
            "max_token_lifetime_seconds": 300,
            "profile": "spiffe_jwt_svid"
        },
        {
            "id": "login",
            "iss": "https://login.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [strip_alg(&rs.public)]},
            "algorithms": ["RS256", "PS256"],
            "max_token_lifetime_seconds": 3600,
            "clock_skew_seconds": 0,
            "claims": {"agent_id": "client_id"},
            "profile": "oauth_access_token"
        },
        {
            "id": "txn",
            "iss": "https://txn.acme.example",
            "audiences": ["acme.example"],
            "jwks": {"keys": [with(ed.public.clone(), |k| drop(k.insert("kid".into(), json!("txn-1"))))]},
            "algorithms": ["EdDSA"],
            "max_token_lifetime_seconds": 600,
            "profile": "txn_token"
        },
        {
            "id": "bound",
            "iss": "https://bound.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [with(es.public.clone(), |k| drop(k.insert("kid".into(), json!("bound-1"))))]},
            "algorithms": ["ES256"],
            "max_token_lifetime_seconds": 300,
            "profile": "spiffe_jwt_svid",
            "require_sender_binding": true
        }
    ])
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let ed = ed_key("ed-1");
        let ed_other = ed_key("ed-1");
        let es = es_key("es-1");
        let rs = rs_key("rs-1");
        let issuers: Vec<Issuer> = serde_json::from_value(issuers_json(&ed, &es, &rs)).unwrap();
        let set = IssuerSet::compile(&issuers).unwrap();
        World { ed, ed_other, es, rs, issuers, set }
    })
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    h
}

/// The `typ` each test issuer's profile requires.
fn typ_for(claims: &Value) -> Option<&'static str> {
    match claims["iss"].as_str() {
        Some(IDP | LOGIN) => Some("at+jwt"),
        Some(TXN) => Some("txntoken+jwt"),
        _ => Some("JWT"),
    }
}

fn mint(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    mint_typ(key, alg, kid, typ_for(claims), claims)
}

fn mint_typ(key: &TestKey, alg: Algorithm, kid: Option<&str>, typ: Option<&str>, claims: &Value) -> String {
    let mut h = header(alg, kid);
    h.typ = typ.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

/// Signs an arbitrary header and payload text (for tokens jsonwebtoken's encoder would never produce).
fn mint_raw(key: &TestKey, alg: Algorithm, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, alg).unwrap();
    format!("{input}.{sig}")
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": AGENT, "aud": "warden", "iat": NOW - 10, "exp": NOW + 290, "jti": "tok-1", "client_id": AGENT})
}

fn with(mut v: Value, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    change(v.as_object_mut().unwrap());
    v
}

const IDP: &str = "https://idp.acme.example";
const SPIRE: &str = "https://spire.acme.example";
const LOGIN: &str = "https://login.acme.example";
const TXN: &str = "https://txn.acme.example";
const BOUND: &str = "https://bound.acme.example";

fn agent(issuer: &str, expires_at: i64) -> Agent {
    Agent {
        id: AGENT.to_string(),
        trust_domain: "acme.example".to_string(),
        issuer: issuer.to_string(),
        token_id: Some("tok-1".to_string()),
        expires_at,
        task: None,
        delegation: None,
        sender_bound: false,
    }
}

#[test]
fn token_table() {
    let w = world();
    let ed = |c: &Value| mint(&w.ed, Algorithm::EdDSA, Some("ed-1"), c);
    let es = |c: &Value| mint(&w.es, Algorithm::ES256, Some("es-1"), c);
    let rs_claims = |iss: &str| with(claims(iss), |m| drop(m.insert("client_id".into(), json!(AGENT))));
    let set = |m: &mut serde_json::Map<String, Value>, k: &str, v: Value| drop(m.insert(k.into(), v));
    let good = ed(&claims(IDP));
    let parts: Vec<&str> = good.split('.').collect();
    let public_x = URL_SAFE_NO_PAD.decode(w.ed.public["x"].as_str().unwrap()).unwrap();
    let public_jwk_text = w.ed.public.to_string();
    let ok = |issuer: &str| Ok::<Agent, TokenFailure>(agent(issuer, NOW + 290));
    let fail = Err::<Agent, TokenFailure>;

    let cases: Vec<(&str, String, Result<Agent, TokenFailure>)> = vec![
        ("valid EdDSA", good.clone(), ok("acme-idp")),
        ("valid ES256", es(&claims(SPIRE)), ok("spire")),
        ("valid RS256", mint(&w.rs, Algorithm::RS256, Some("rs-1"), &rs_claims(LOGIN)), ok("login")),
        ("valid PS256", mint(&w.rs, Algorithm::PS256, Some("rs-1"), &rs_claims(LOGIN)), ok("login")),
        (
            "aud as array, one matching",
            ed(&with(claims(IDP), |m| set(m, "aud", json!(["billing", "gateway"])))),
            ok("acme-idp"),
        ),
        (
            "aud as array, none matching",
            ed(&with(claims(IDP), |m| set(m, "aud", json!(["billing", "crm"])))),
            fail(TokenFailure::WrongAudience),
        ),
        ("aud empty array", ed(&with(claims(IDP), |m| set(m, "aud", json!([])))), fail(TokenFailure::WrongAudience)),
        (
            "wrong audience",
            ed(&with(claims(IDP), |m| set(m, "aud", json!("billing")))),
            fail(TokenFailure::WrongAudience),
        ),
        ("aud not a string", ed(&with(claims(IDP), |m| set(m, "aud", json!(7)))), fail(TokenFailure::MissingClaim)),
        (
            "aud array with a number",
            ed(&with(claims(IDP), |m| set(m, "aud", json!(["warden", 7])))),
            fail(TokenFailure::MissingClaim),
        ),
        ("missing aud", ed(&with(claims(IDP), |m| drop(m.remove("aud")))), fail(TokenFailure::MissingClaim)),
        (
            "expired",
            ed(&with(claims(IDP), |m| {
                set(m, "iat", json!(NOW - 400));
                set(m, "exp", json!(NOW - 31));
            })),
            fail(TokenFailure::Expired),
        ),
        (
            "exp exactly at the skew boundary (now == exp + skew) is expired",
            ed(&with(claims(IDP), |m| {
                set(m, "iat", json!(NOW - 400));
                set(m, "exp", json!(NOW - 30));
            })),
            fail(TokenFailure::Expired),
        ),
        (
            "exp one second inside the skew",
            ed(&with(claims(IDP), |m| {
                set(m, "iat", json!(NOW - 400));
                set(m, "exp", json!(NOW - 29));
            })),
            Ok(agent("acme-idp", NOW - 29)),
        ),
        (
            "exp == now with zero skew is expired",
            mint(&w.rs, Algorithm::RS256, Some("rs-1"), &with(rs_claims(LOGIN), |m| set(m, "exp", json!(NOW)))),
            fail(TokenFailure::Expired),
        ),
        (
            "not yet valid (nbf beyond skew)",
            ed(&with(claims(IDP), |m| set(m, "nbf", json!(NOW + 31)))),
            fail(TokenFailure::NotYetValid),
        ),
        (
            "nbf exactly at the skew boundary",
            ed(&with(claims(IDP), |m| set(m, "nbf", json!(NOW + 30)))),
            ok("acme-idp"),
        ),
        ("nbf in the past", ed(&with(claims(IDP), |m| set(m, "nbf", json!(NOW - 10)))), ok("acme-idp")),
        (
            "iat in the future beyond skew",
            ed(&with(claims(IDP), |m| set(m, "iat", json!(NOW + 31)))),
            fail(TokenFailure::IssuedInFuture),
        ),
        (
            "iat exactly at the skew boundary",
            ed(&with(claims(IDP), |m| set(m, "iat", json!(NOW + 30)))),
            ok("acme-idp"),
        ),
        (
            "lifetime over the limit (601 > 600)",
            ed(&with(claims(IDP), |m| {
                set(m, "iat", json!(NOW - 10));
                set(m, "exp", json!(NOW + 591));
            })),
            fail(TokenFailure::LifetimeTooLong),
        ),
        (
            "lifetime exactly the limit",
            ed(&with(claims(IDP), |m| {
                set(m, "iat", json!(NOW - 10));
                set(m, "exp", json!(NOW + 590));
            })),
            Ok(agent("acme-idp", NOW + 590)),
        ),
        (
            "wrong issuer",
            ed(&with(claims(IDP), |m| set(m, "iss", json!("https://evil.example")))),
            fail(TokenFailure::UnknownIssuer),
        ),
        (
            "iss differs only in a trailing slash",
            ed(&claims("https://idp.acme.example/")),
            fail(TokenFailure::UnknownIssuer),
        ),
        ("missing iss", ed(&with(claims(IDP), |m| drop(m.remove("iss")))), fail(TokenFailure::MissingClaim)),
        ("iss not a string", ed(&with(claims(IDP), |m| set(m, "iss", json!(["x"])))), fail(TokenFailure::MissingClaim)),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","kid":"ed-1"}"#), parts[1]),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        (
            "alg NONE",
            format!("{}.{}.", b64(br#"{"alg":"NONE","kid":"ed-1"}"#), parts[1]),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        (
            "HS256 keyed with the issuer's public key bytes (algorithm confusion)",
            jsonwebtoken::encode(
                &header(Algorithm::HS256, Some("ed-1")),
                &claims(IDP),
                &EncodingKey::from_secret(&public_x).unwrap(),
            )
            .unwrap(),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        (
            "HS256 keyed with the issuer's JWK text",
            jsonwebtoken::encode(
                &header(Algorithm::HS256, Some("ed-1")),
                &claims(IDP),
                &EncodingKey::from_secret(public_jwk_text.as_bytes()).unwrap(),
            )
            .unwrap(),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        (
            "alg not in the issuer's allowlist (ES256 at an EdDSA issuer)",
            mint(&w.es, Algorithm::ES256, Some("ed-1"), &claims(IDP)),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        (
            "alg not in the allowlist (RS512 at an RS256/PS256 issuer)",
            mint(&w.rs, Algorithm::RS512, Some("rs-1"), &rs_claims(LOGIN)),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        ("unknown kid", mint(&w.ed, Algorithm::EdDSA, Some("ed-9"), &claims(IDP)), fail(TokenFailure::UnknownKey)),
        (
            "another issuer's kid",
            mint(&w.ed, Algorithm::EdDSA, Some("es-1"), &claims(IDP)),
            fail(TokenFailure::UnknownKey),
        ),
        (
            "another issuer's key and alg",
            mint(&w.es, Algorithm::ES256, Some("es-1"), &rs_claims(LOGIN)),
            fail(TokenFailure::AlgorithmNotAllowed),
        ),
        ("missing kid", mint(&w.ed, Algorithm::EdDSA, None, &claims(IDP)), fail(TokenFailure::UnknownKey)),
        (
            "signature from another key with the right kid",
            mint(&w.ed_other, Algorithm::EdDSA, Some("ed-1"), &claims(IDP)),
            fail(TokenFailure::BadSignature),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with(claims(IDP), |m| set(m, "sub", json!("spiffe://acme.example/agents/admin")))
                    .to_string()
                    .as_bytes()),
                parts[2]
            ),
            fail(TokenFailure::BadSignature),
        ),
        ("empty signature", format!("{}.{}.", parts[0], parts[1]), fail(TokenFailure::BadSignature)),
        ("signature of the wrong length", format!("{}.{}.AAAA", parts[0], parts[1]), fail(TokenFailure::BadSignature)),
        ("missing exp", ed(&with(claims(IDP), |m| drop(m.remove("exp")))), fail(TokenFailure::MissingClaim)),
        ("missing iat", ed(&with(claims(IDP), |m| drop(m.remove("iat")))), fail(TokenFailure::MissingClaim)),
        ("missing sub", ed(&with(claims(IDP), |m| drop(m.remove("sub")))), fail(TokenFailure::MissingClaim)),
        (
            "sub not a string",
            ed(&with(claims(IDP), |m| set(m, "sub", json!({"id": AGENT})))),
            fail(TokenFailure::MissingClaim),
        ),
        ("sub empty", ed(&with(claims(IDP), |m| set(m, "sub", json!("")))), fail(TokenFailure::MissingClaim)),
        (
            "exp as a string",
            ed(&with(claims(IDP), |m| set(m, "exp", json!("1780000290")))),
            fail(TokenFailure::MissingClaim),
        ),
        ("jti not a string", ed(&with(claims(IDP), |m| set(m, "jti", json!(42)))), fail(TokenFailure::MissingClaim)),
        (
            "mapped agent claim missing (client_id) though sub is there",
            mint(&w.rs, Algorithm::RS256, Some("rs-1"), &with(claims(LOGIN), |m| drop(m.remove("client_id")))),
            fail(TokenFailure::MissingClaim),
        ),
        ("malformed base64", format!("{}.{}!.{}", parts[0], parts[1], parts[2]), fail(TokenFailure::Malformed)),
        ("padded base64", format!("{}=.{}.{}", parts[0], parts[1], parts[2]), fail(TokenFailure::Malformed)),
        ("two segments", format!("{}.{}", parts[0], parts[1]), fail(TokenFailure::Malformed)),
        ("four segments", format!("{good}.{}", parts[2]), fail(TokenFailure::Malformed)),
        ("empty token", String::new(), fail(TokenFailure::Malformed)),
        ("non-JSON header", format!("{}.{}.{}", b64(b"alg=EdDSA"), parts[1], parts[2]), fail(TokenFailure::Malformed)),
        (
            "payload a JSON array",
            mint_raw(&w.ed, Algorithm::EdDSA, r#"{"alg":"EdDSA","kid":"ed-1"}"#, "[1,2]"),
            fail(TokenFailure::Malformed),
        ),
        (
            "duplicate sub claim (parser differential)",
            mint_raw(
                &w.ed,
                Algorithm::EdDSA,
                r#"{"alg":"EdDSA","kid":"ed-1"}"#,
                &format!(
                    r#"{{"iss":"{IDP}","sub":"{AGENT}","sub":"spiffe://acme.example/agents/admin","aud":"warden","iat":{},"exp":{}}}"#,
                    NOW - 10,
                    NOW + 290
                ),
            ),
            fail(TokenFailure::Malformed),
        ),
        (
            "crit header",
            mint_raw(
                &w.ed,
                Algorithm::EdDSA,
                r#"{"alg":"EdDSA","kid":"ed-1","crit":["exp"]}"#,
                &claims(IDP).to_string(),
            ),
            fail(TokenFailure::Malformed),
        ),
        (
            "oversized token",
            ed(&with(claims(IDP), |m| set(m, "pad", json!("x".repeat(identity::MAX_TOKEN_BYTES))))),
            fail(TokenFailure::TooLarge),
        ),
        (
            "task claims mapped",
            ed(&with(claims(IDP), |m| {
                set(m, "task_id", json!("task-42"));
                set(m, "purpose", json!("refund-review"));
                set(m, "task_exp", json!(NOW + 100));
            })),
            Ok(Agent {
                task: Some(Task {
                    id: "task-42".into(),
                    purpose: Some("refund-review".into()),
                    expires_at: Some(NOW + 100),
                }),
                ..agent("acme-idp", NOW + 290)
            }),
        ),
        (
            "task id without purpose or expiry",
            ed(&with(claims(IDP), |m| set(m, "task_id", json!("task-42")))),
            Ok(Agent {
                task: Some(Task { id: "task-42".into(), purpose: None, expires_at: None }),
                ..agent("acme-idp", NOW + 290)
            }),
        ),
        (
            "task id not a string",
            ed(&with(claims(IDP), |m| set(m, "task_id", json!(42)))),
            fail(TokenFailure::MissingClaim),
        ),
        (
            "URL agent id",
            ed(&with(claims(IDP), |m| {
                set(m, "sub", json!("https://agents.acme.example:8443/bot"));
            })),
            Ok(Agent {
                id: "https://agents.acme.example:8443/bot".into(),
                trust_domain: "agents.acme.example".into(),
                ..agent("acme-idp", NOW + 290)
            }),
        ),
        (
            "access token without jti",
            ed(&with(claims(IDP), |m| drop(m.remove("jti")))),
            fail(TokenFailure::MissingClaim),
        ),
        (
            "fractional NumericDate",
            ed(&with(claims(IDP), |m| set(m, "exp", json!((NOW + 100) as f64 + 0.5)))),
            Ok(agent("acme-idp", NOW + 100)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        let got = identity::verify(&w.set, token, NOW);
        if &got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 25);
}

#[test]
fn oversized_boundary_is_the_byte_count() {
    let w = world();
    let at = identity::MAX_TOKEN_BYTES;
    let token = "a".repeat(at + 1);
    assert_eq!(identity::verify(&w.set, &token, NOW), Err(TokenFailure::TooLarge));
    let token = "a".repeat(at);
    assert_eq!(identity::verify(&w.set, &token, NOW), Err(TokenFailure::Malformed));
}

#[test]
fn issuer_set_knows_its_ids() {
    let w = world();
    assert!(w.set.contains("acme-idp") && w.set.contains("spire") && w.set.contains("login"));
    assert!(!w.set.contains("Acme-idp") && !w.set.contains(""));
    assert_eq!(w.set.ids().collect::<Vec<_>>(), vec!["acme-idp", "spire", "login", "txn", "bound"]);
    assert_eq!(w.set.len(), 5);
    assert!(IssuerSet::compile(&[]).unwrap().is_empty());
    // Every token is from an unknown issuer when the bundle trusts none.
    let token = mint(&w.ed, Algorithm::EdDSA, Some("ed-1"), &claims(IDP));
    assert_eq!(identity::verify(&IssuerSet::compile(&[]).unwrap(), &token, NOW), Err(TokenFailure::UnknownIssuer));
}

#[test]
fn issuer_compile_errors_name_the_location() {
    let w = world();
    let base = serde_json::to_value(&w.issuers[0]).unwrap();
    let rs_public = w.rs.public.clone();
    let es_public = w.es.public.clone();
    let ed_public = w.ed.public.clone();
    let key = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut k = ed_public.clone();
        change(k.as_object_mut().unwrap());
        with(base.clone(), |m| drop(m.insert("jwks".into(), json!({"keys": [k]}))))
    };
    let field = |name: &str, v: Value| with(base.clone(), |m| drop(m.insert(name.into(), v)));
    type Case = (&'static str, Vec<Value>, Vec<(&'static str, String)>);
    let e = |loc: &'static str, msg: &str| (loc, msg.to_string());
    let cases: Vec<Case> = vec![
        (
            "duplicate issuer id and iss",
            vec![base.clone(), base.clone()],
            vec![
                e("/issuers/1/id", "duplicate issuer id \"acme-idp\" (also /issuers/0/id)"),
                e("/issuers/1/iss", "duplicate iss \"https://idp.acme.example\" (also /issuers/0/iss)"),
            ],
        ),
        ("bad id", vec![field("id", json!("Acme IdP"))], vec![e("/issuers/0/id", "bad issuer id \"Acme IdP\": use [a-z0-9][a-z0-9._-]*")]),
        ("empty iss", vec![field("iss", json!(""))], vec![e("/issuers/0/iss", "must not be empty")]),
        ("no audiences", vec![field("audiences", json!([]))], vec![e("/issuers/0/audiences", "at least one audience is required")]),
        ("empty audience", vec![field("audiences", json!(["warden", ""]))], vec![e("/issuers/0/audiences/1", "must not be empty")]),
        (
            "no algorithms",
            vec![field("algorithms", json!([]))],
            vec![e("/issuers/0/algorithms", "at least one algorithm is required")],
        ),
        (
            "none",
            vec![field("algorithms", json!(["EdDSA", "none"]))],
            vec![e("/issuers/0/algorithms/1", "\"none\" is never accepted: tokens must be signed")],
        ),
        (
            "HMAC",
            vec![field("algorithms", json!(["HS256", "EdDSA"]))],
            vec![e("/issuers/0/algorithms/0", "\"HS256\" is symmetric (HMAC): agent tokens must be signed with an asymmetric key")],
        ),
        (
            "unsupported algorithm",
            vec![field("algorithms", json!(["EdDSA", "ES512"]))],
            vec![e(
                "/issuers/0/algorithms/1",
                "unsupported algorithm \"ES512\" (supported: EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512)",
            )],
        ),
        ("duplicate algorithm", vec![field("algorithms", json!(["EdDSA", "EdDSA"]))], vec![e("/issuers/0/algorithms/1", "duplicate algorithm \"EdDSA\"")]),
        ("skew over 300", vec![field("clock_skew_seconds", json!(301))], vec![e("/issuers/0/clock_skew_seconds", "must be at most 300, found 301")]),
        ("lifetime 0", vec![field("max_token_lifetime_seconds", json!(0))], vec![e("/issuers/0/max_token_lifetime_seconds", "must be at least 1")]),
        ("no keys", vec![field("jwks", json!({"keys": []}))], vec![e("/issuers/0/jwks/keys", "at least one key is required")]),
        (
            "key without kid",
            vec![key(&|k| drop(k.remove("kid")))],
            vec![e("/issuers/0/jwks/keys/0", "\"kid\" is missing: every issuer key needs a key id")],
        ),
        (
            "duplicate kid",
            vec![field("jwks", json!({"keys": [ed_public, ed_public]}))],
            vec![e("/issuers/0/jwks/keys/1", "duplicate kid \"ed-1\" (also /issuers/0/jwks/keys/0)")],
        ),
        (
            "symmetric key",
            vec![field("jwks", json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h1"}]}))],
            vec![e("/issuers/0/jwks/keys/0", "symmetric key (kty \"oct\") is never accepted: issuer keys must be public keys")],
        ),
        (
            "private key material",
            vec![key(&|k| drop(k.insert("d".into(), json!("AAAA"))))],
            vec![e("/issuers/0/jwks/keys/0", "private key material (\"d\") in a public key set")],
        ),
        (
            "key alg does not fit its kty",
            vec![key(&|k| drop(k.insert("alg".into(), json!("ES256"))))],
            vec![e("/issuers/0/jwks/keys/0", "key \"alg\" \"ES256\" does not fit an OKP Ed25519 key")],
        ),
        (
            "key alg HS256",
            vec![key(&|k| drop(k.insert("alg".into(), json!("HS256"))))],
            vec![e("/issuers/0/jwks/keys/0", "key \"alg\" \"HS256\" is not an accepted signature algorithm")],
        ),
        (
            "key alg not in the issuer's algorithms",
            vec![with(field("jwks", json!({"keys": [rs_public]})), |m| drop(m.insert("algorithms".into(), json!(["EdDSA", "PS256"]))))],
            vec![e("/issuers/0/jwks/keys/0", "key \"alg\" \"RS256\" is not in the issuer's algorithms")],
        ),
        (
            "key fits none of the issuer's algorithms",
            vec![field("jwks", json!({"keys": [with(es_public.clone(), |k| drop(k.remove("alg")))]}))],
            vec![e("/issuers/0/jwks/keys/0", "an EC P-256 key fits none of the issuer's algorithms [EdDSA]")],
        ),
        (
            "key with its own alg at an issuer that does not allow it",
            vec![field("jwks", json!({"keys": [es_public]}))],
            vec![e("/issuers/0/jwks/keys/0", "key \"alg\" \"ES256\" is not in the issuer's algorithms")],
        ),
        (
            "unsupported curve",
            vec![key(&|k| drop(k.insert("crv".into(), json!("Ed448"))))],
            vec![e("/issuers/0/jwks/keys/0", "unsupported curve \"Ed448\" for kty \"OKP\" (supported: Ed25519, P-256, P-384)")],
        ),
        (
            "unsupported kty",
            vec![key(&|k| drop(k.insert("kty".into(), json!("DSA"))))],
            vec![e("/issuers/0/jwks/keys/0", "unsupported kty \"DSA\" (supported: OKP, EC, RSA)")],
        ),
        ("short x", vec![key(&|k| drop(k.insert("x".into(), json!("AAAA"))))], vec![e("/issuers/0/jwks/keys/0", "\"x\" must be 32 bytes, found 3")]),
        (
            "EC point not on the curve",
            vec![with(field("jwks", json!({"keys": [with(es_public.clone(), |k| drop(k.insert("y".into(), k["x"].clone())))]})), |m| {
                drop(m.insert("algorithms".into(), json!(["ES256"])))
            })],
            vec![e("/issuers/0/jwks/keys/0", "\"x\"/\"y\" is not a point on P-256")],
        ),
        (
            "RSA key too small",
            vec![with(
                field("jwks", json!({"keys": [{"kty": "RSA", "kid": "r", "n": b64(&[0xc5; 128]), "e": "AQAB"}]})),
                |m| drop(m.insert("algorithms".into(), json!(["RS256"]))),
            )],
            vec![e("/issuers/0/jwks/keys/0", "RSA modulus \"n\" must be 2048 to 4096 bits, found 1024")],
        ),
        (
            "RSA even exponent",
            vec![with(
                field("jwks", json!({"keys": [{"kty": "RSA", "kid": "r", "n": b64(&[0xc5; 256]), "e": "AAI"}]})),
                |m| drop(m.insert("algorithms".into(), json!(["RS256"]))),
            )],
            vec![e("/issuers/0/jwks/keys/0", "RSA exponent \"e\" must be odd, at least 3 and at most 33 bits")],
        ),
        ("use enc", vec![key(&|k| drop(k.insert("use".into(), json!("enc"))))], vec![e("/issuers/0/jwks/keys/0", "\"use\" is \"enc\", expected \"sig\"")]),
        (
            "empty agent claim and task purpose without task id",
            vec![field("claims", json!({"agent_id": "", "task_purpose": "purp"}))],
            vec![
                e("/issuers/0/claims/agent_id", "must not be empty"),
                e("/issuers/0/claims/task_purpose", "needs claims.task_id (task context starts there)"),
            ],
        ),
        (
            "issue 19 item 10: the issuer options, validated",
            vec![with(base.clone(), |m| {
                m.insert("require_sender_binding_for".into(), json!(["spiffe://acme.example/agents/*", "a*b"]));
                m.insert("trust_domains".into(), json!(["acme.example", "Acme.Example"]));
                m.insert("profile".into(), json!("spiffe_jwt_svid"));
                m.insert("claims".into(), json!({}));
                m.remove("delegation");
            })],
            vec![
                e("/issuers/0/require_sender_binding_for/1", "bad agent pattern \"a*b\": use *, prefix/* or an exact agent id"),
                e("/issuers/0/trust_domains/1", "bad trust domain \"Acme.Example\": lower-case letters, digits, '.', '-' and '_'"),
            ],
        ),
        (
            "trust domains only for JWT-SVIDs, sender binding not for Transaction Tokens",
            vec![
                field("trust_domains", json!([])),
                with(field("require_sender_binding_for", json!(["*"])), |m| {
                    m.insert("profile".into(), json!("txn_token"));
                    m.insert("claims".into(), json!({}));
                    m.insert("iss".into(), json!("https://txn.example"));
                    m.insert("id".into(), json!("txn"));
                    m.insert("trust_domains".into(), json!(["acme.example"]));
                    m.remove("delegation");
                }),
            ],
            vec![
                e("/issuers/0/trust_domains", "not allowed for this profile: only spiffe_jwt_svid issuers name SPIFFE trust domains"),
                e("/issuers/0/trust_domains", "at least one trust domain (or leave it out)"),
                e(
                    "/issuers/1/require_sender_binding_for",
                    "not allowed for profile \"txn_token\": a Transaction Token is bound to the agent through its subject",
                ),
                e(
                    "/issuers/1/trust_domains",
                    "not allowed for this profile: only spiffe_jwt_svid issuers name SPIFFE trust domains",
                ),
            ],
        ),
        (
            "several problems at once, all reported",
            vec![with(base.clone(), |m| {
                m.insert("algorithms".into(), json!(["none"]));
                m.insert("clock_skew_seconds".into(), json!(900));
                m.insert("audiences".into(), json!([]));
            })],
            vec![
                e("/issuers/0/audiences", "at least one audience is required"),
                e("/issuers/0/algorithms/0", "\"none\" is never accepted: tokens must be signed"),
                e("/issuers/0/clock_skew_seconds", "must be at most 300, found 900"),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, issuers, want) in &cases {
        let issuers: Vec<Issuer> = issuers.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
        let got: Vec<(String, String)> = match IssuerSet::compile(&issuers) {
            Ok(_) => vec![],
            Err(errs) => errs.into_iter().map(|e| (e.location, e.message)).collect(),
        };
        let want: Vec<(String, String)> = want.iter().map(|(l, m)| (l.to_string(), m.clone())).collect();
        if got != want {
            failures.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn bearer_token_table() {
    let cases: Vec<(&str, Result<&str, TokenFailure>)> = vec![
        ("Bearer abc.def.ghi", Ok("abc.def.ghi")),
        ("bearer abc", Ok("abc")),
        ("BEARER abc", Ok("abc")),
        ("bEaReR a-b_c.d~e+f/g=", Ok("a-b_c.d~e+f/g=")),
        ("Bearer", Err(TokenFailure::Malformed)),
        ("Bearer ", Err(TokenFailure::Malformed)),
        ("Bearer  abc", Ok("abc")),
        ("bearer     abc", Ok("abc")),
        ("Bearer\tabc", Err(TokenFailure::Malformed)),
        ("Bearer \tabc", Err(TokenFailure::Malformed)),
        ("Bearer   ", Err(TokenFailure::Malformed)),
        ("Bearer abc def", Err(TokenFailure::Malformed)),
        ("Bearer abc ", Err(TokenFailure::Malformed)),
        (" Bearer abc", Err(TokenFailure::Malformed)),
        ("Basic dXNlcjpwYXNz", Err(TokenFailure::Malformed)),
        ("Bearerabc", Err(TokenFailure::Malformed)),
        ("abc.def.ghi", Err(TokenFailure::Malformed)),
        ("Bearer abc\u{e9}", Err(TokenFailure::Malformed)),
        ("Bearér abc", Err(TokenFailure::Malformed)),
        ("", Err(TokenFailure::Malformed)),
    ];
    for (value, want) in cases {
        assert_eq!(bearer_token(value), want, "{value:?}");
    }
}

#[test]
fn trust_domain_table() {
    let cases = [
        ("spiffe://acme.example/agents/support/bot-1", "acme.example"),
        ("spiffe://acme.example", "acme.example"),
        ("https://agents.acme.example:8443/bot", "agents.acme.example"),
        ("https://user@agents.acme.example/bot", "agents.acme.example"),
        ("https://[2001:db8::1]:443/x", "[2001:db8::1]"),
        ("bot-1", ""),
        ("urn:agent:bot-1", ""),
        ("", ""),
    ];
    for (id, want) in cases {
        assert_eq!(trust_domain(id), want, "{id}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Profiles, delegation, sender binding, Transaction Tokens, the cache

fn set(m: &mut serde_json::Map<String, Value>, k: &str, v: Value) {
    m.insert(k.into(), v);
}

fn svid(c: &Value) -> String {
    mint(&world().es, Algorithm::ES256, Some("es-1"), c)
}

fn at(c: &Value) -> String {
    mint(&world().ed, Algorithm::EdDSA, Some("ed-1"), c)
}

fn txn_claims(sub: &str) -> Value {
    json!({"iss": TXN, "sub": sub, "aud": "acme.example", "iat": NOW - 5, "exp": NOW + 120, "txn": "txn-77",
           "purp": "refund-review"})
}

fn txn(c: &Value) -> String {
    mint_typ(&world().ed, Algorithm::EdDSA, Some("txn-1"), Some("txntoken+jwt"), c)
}

fn peer(uri: Option<&str>, digest: Option<[u8; 32]>) -> PeerIdentity {
    PeerIdentity { uri_san: uri.map(str::to_string), cert_sha256: digest }
}

#[test]
fn profile_table() {
    let w = world();
    let fail = Err::<Agent, TokenFailure>;
    let ok = |issuer: &str, token_id: Option<&str>, expires_at: i64| {
        Ok::<Agent, TokenFailure>(Agent { token_id: token_id.map(str::to_string), ..agent(issuer, expires_at) })
    };
    let cases: Vec<(&str, String, Result<Agent, TokenFailure>)> = vec![
        ("SVID typ JWT", svid(&claims(SPIRE)), ok("spire", Some("tok-1"), NOW + 290)),
        (
            "SVID typ JOSE",
            mint_typ(&w.es, Algorithm::ES256, Some("es-1"), Some("JOSE"), &claims(SPIRE)),
            ok("spire", Some("tok-1"), NOW + 290),
        ),
        (
            "SVID without typ",
            mint_typ(&w.es, Algorithm::ES256, Some("es-1"), None, &claims(SPIRE)),
            ok("spire", Some("tok-1"), NOW + 290),
        ),
        (
            "SVID typ at+jwt",
            mint_typ(&w.es, Algorithm::ES256, Some("es-1"), Some("at+jwt"), &claims(SPIRE)),
            fail(TokenFailure::WrongType),
        ),
        (
            "SVID typ txntoken+jwt",
            mint_typ(&w.es, Algorithm::ES256, Some("es-1"), Some("txntoken+jwt"), &claims(SPIRE)),
            fail(TokenFailure::WrongType),
        ),
        (
            "SVID non-SPIFFE sub",
            svid(&with(claims(SPIRE), |m| set(m, "sub", json!("bot-1")))),
            fail(TokenFailure::NotSpiffeId),
        ),
        (
            "SVID https sub",
            svid(&with(claims(SPIRE), |m| set(m, "sub", json!("https://acme.example/agents/x")))),
            fail(TokenFailure::NotSpiffeId),
        ),
        (
            "SVID trust domain only",
            svid(&with(claims(SPIRE), |m| set(m, "sub", json!("spiffe://acme.example")))),
            fail(TokenFailure::NotSpiffeId),
        ),
        (
            "SVID without jti or client_id",
            svid(&with(claims(SPIRE), |m| {
                m.remove("jti");
                m.remove("client_id");
            })),
            ok("spire", None, NOW + 290),
        ),
        (
            "SVID without iat, exp within the limit",
            svid(&with(claims(SPIRE), |m| drop(m.remove("iat")))),
            ok("spire", Some("tok-1"), NOW + 290),
        ),
        (
            "SVID without iat, exp beyond the limit",
            svid(&with(claims(SPIRE), |m| {
                m.remove("iat");
                set(m, "exp", json!(NOW + 331));
            })),
            fail(TokenFailure::LifetimeTooLong),
        ),
        ("SVID without aud", svid(&with(claims(SPIRE), |m| drop(m.remove("aud")))), fail(TokenFailure::MissingClaim)),
        ("SVID without exp", svid(&with(claims(SPIRE), |m| drop(m.remove("exp")))), fail(TokenFailure::MissingClaim)),
        (
            "SVID with act",
            svid(&with(claims(SPIRE), |m| set(m, "act", json!({"sub": AGENT})))),
            fail(TokenFailure::DelegationNotAllowed),
        ),
        (
            "AT typ application/at+jwt",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("ed-1"), Some("application/AT+JWT"), &claims(IDP)),
            ok("acme-idp", Some("tok-1"), NOW + 290),
        ),
        (
            "AT typ JWT",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("ed-1"), Some("JWT"), &claims(IDP)),
            fail(TokenFailure::WrongType),
        ),
        (
            "AT without typ",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("ed-1"), None, &claims(IDP)),
            fail(TokenFailure::WrongType),
        ),
        (
            "AT typ txntoken+jwt",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("ed-1"), Some("txntoken+jwt"), &claims(IDP)),
            fail(TokenFailure::WrongType),
        ),
        (
            "AT without client_id",
            at(&with(claims(IDP), |m| drop(m.remove("client_id")))),
            fail(TokenFailure::MissingClaim),
        ),
        ("AT with empty jti", at(&with(claims(IDP), |m| set(m, "jti", json!("")))), fail(TokenFailure::MissingClaim)),
        ("AT without sub", at(&with(claims(IDP), |m| drop(m.remove("sub")))), fail(TokenFailure::MissingClaim)),
        ("Txn-Token as the agent token", txn(&txn_claims(AGENT)), fail(TokenFailure::WrongProfile)),
        (
            "the Txn-Token issuer's token with typ at+jwt",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("txn-1"), Some("at+jwt"), &txn_claims(AGENT)),
            fail(TokenFailure::WrongProfile),
        ),
        (
            "typ not a string",
            mint_raw(&w.ed, Algorithm::EdDSA, r#"{"alg":"EdDSA","kid":"ed-1","typ":7}"#, &claims(IDP).to_string()),
            fail(TokenFailure::Malformed),
        ),
    ];
    let mut failures = Vec::new();
    for (name, token, want) in &cases {
        let got = identity::verify(&w.set, token, NOW);
        if &got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn delegation_table() {
    let user = "https://login.acme.example/users/alice";
    let admin = "spiffe://acme.example/agents/admin/root";
    let delegated = |act: Value| {
        at(&with(claims(IDP), |m| {
            set(m, "sub", json!(user));
            set(m, "act", act);
        }))
    };
    let w = world();
    let ok = |chain: Vec<&str>| {
        Ok::<Agent, TokenFailure>(Agent {
            delegation: Some(Delegation {
                delegator: user.into(),
                chain: chain.into_iter().map(String::from).collect(),
            }),
            ..agent("acme-idp", NOW + 290)
        })
    };
    let cases: Vec<(&str, String, Result<Agent, TokenFailure>)> = vec![
        ("one actor: agent is act.sub, delegator is sub", delegated(json!({"sub": AGENT})), ok(vec![])),
        ("actor with iss member", delegated(json!({"sub": AGENT, "iss": "https://sts.acme.example"})), ok(vec![])),
        (
            "nested act is recorded, the agent is the current actor",
            delegated(json!({"sub": AGENT, "act": {"sub": admin}})),
            ok(vec![admin]),
        ),
        (
            "deeper than max_depth 2",
            delegated(json!({"sub": AGENT, "act": {"sub": admin, "act": {"sub": "x"}}})),
            Err(TokenFailure::DelegationTooDeep),
        ),
        ("act without sub", delegated(json!({"iss": "x"})), Err(TokenFailure::MissingClaim)),
        ("act not an object", delegated(json!(AGENT)), Err(TokenFailure::MissingClaim)),
        ("nested act without sub", delegated(json!({"sub": AGENT, "act": {}})), Err(TokenFailure::MissingClaim)),
        (
            "act at an issuer without delegation",
            mint(&w.rs, Algorithm::RS256, Some("rs-1"), &with(claims(LOGIN), |m| set(m, "act", json!({"sub": AGENT})))),
            Err(TokenFailure::DelegationNotAllowed),
        ),
    ];
    for (name, token, want) in &cases {
        assert_eq!(&identity::verify(&w.set, token, NOW), want, "{name}");
    }
    let a = identity::verify(&w.set, &delegated(json!({"sub": AGENT, "act": {"sub": admin}})), NOW).unwrap();
    assert_eq!(a.delegation.as_ref().map(Delegation::depth), Some(2));
}

#[test]
fn sender_binding_table() {
    let w = world();
    let bound_token = |extra: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        mint(&w.es, Algorithm::ES256, Some("bound-1"), &with(claims(BOUND), |m| extra(m)))
    };
    let digest = [7u8; 32];
    let thumb = b64(&digest);
    let other = "spiffe://acme.example/agents/other";
    let bound_ok = Ok::<Agent, TokenFailure>(Agent { sender_bound: true, ..agent("bound", NOW + 290) });
    type Case<'a> = (&'a str, String, Option<PeerIdentity>, Result<Agent, TokenFailure>);
    let cases: Vec<Case> = vec![
        ("bound issuer, matching peer", bound_token(&|_| {}), Some(peer(Some(AGENT), None)), bound_ok.clone()),
        ("bound issuer, no mTLS", bound_token(&|_| {}), None, Err(TokenFailure::SenderNotMtls)),
        (
            "bound issuer, peer without URI SAN",
            bound_token(&|_| {}),
            Some(peer(None, Some(digest))),
            Err(TokenFailure::SenderNotMtls),
        ),
        (
            "bound issuer, another workload",
            bound_token(&|_| {}),
            Some(peer(Some(other), None)),
            Err(TokenFailure::SenderMismatch),
        ),
        (
            "unbound issuer, matching peer: bound fact",
            svid(&claims(SPIRE)),
            Some(peer(Some(AGENT), None)),
            Ok(Agent { sender_bound: true, ..agent("spire", NOW + 290) }),
        ),
        (
            "unbound issuer, other peer: not bound, not refused",
            svid(&claims(SPIRE)),
            Some(peer(Some(other), None)),
            Ok(agent("spire", NOW + 290)),
        ),
        (
            "cnf x5t#S256 matches",
            svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"x5t#S256": thumb})))),
            Some(peer(Some(AGENT), Some(digest))),
            Ok(Agent { sender_bound: true, ..agent("spire", NOW + 290) }),
        ),
        (
            "cnf x5t#S256 differs",
            svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"x5t#S256": b64(&[8u8; 32])})))),
            Some(peer(Some(AGENT), Some(digest))),
            Err(TokenFailure::CnfMismatch),
        ),
        (
            "cnf without mTLS",
            svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"x5t#S256": thumb})))),
            None,
            Err(TokenFailure::SenderNotMtls),
        ),
        (
            "cnf jkt (DPoP) is not supported",
            svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"jkt": "abc"})))),
            Some(peer(Some(AGENT), Some(digest))),
            Err(TokenFailure::CnfMismatch),
        ),
        (
            "cnf not an object",
            svid(&with(claims(SPIRE), |m| set(m, "cnf", json!("x")))),
            Some(peer(Some(AGENT), Some(digest))),
            Err(TokenFailure::CnfMismatch),
        ),
    ];
    for (name, token, p, want) in &cases {
        assert_eq!(&identity::verify_presented(&w.set, token, p.as_ref(), NOW), want, "{name}");
    }
    // Envoy's hex digest.
    let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(PeerIdentity::from_envoy(Some(AGENT), Some(&hex)), Some(peer(Some(AGENT), Some(digest))));
    assert_eq!(PeerIdentity::from_envoy(Some(AGENT), Some("zz")), Some(peer(Some(AGENT), None)));
    assert_eq!(PeerIdentity::from_envoy(Some(""), None), None);
    assert_eq!(PeerIdentity::from_envoy(None, Some(&hex[..62])), None);
}

#[test]
fn txn_token_table() {
    let w = world();
    let me = agent("acme-idp", NOW + 290);
    let user = "https://login.acme.example/users/alice";
    let for_user = Agent {
        delegation: Some(Delegation { delegator: user.into(), chain: vec![] }),
        ..agent("acme-idp", NOW + 290)
    };
    let task = |exp: i64| {
        Ok::<Task, TokenFailure>(Task {
            id: "txn-77".into(),
            purpose: Some("refund-review".into()),
            expires_at: Some(exp),
        })
    };
    let f = |t: TxnFailure| Err::<Task, TokenFailure>(TokenFailure::Txn(t));
    let c = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| txn(&with(txn_claims(AGENT), |m| change(m)));
    type Case<'a> = (&'a str, String, &'a Agent, Result<Task, TokenFailure>);
    let cases: Vec<Case> = vec![
        ("valid", c(&|_| {}), &me, task(NOW + 120)),
        (
            "typ application/txntoken+jwt",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("txn-1"), Some("application/txntoken+jwt"), &txn_claims(AGENT)),
            &me,
            task(NOW + 120),
        ),
        (
            "expired: an invalid token (the task is over)",
            c(&|m| {
                set(m, "iat", json!(NOW - 400));
                set(m, "exp", json!(NOW - 100));
            }),
            &me,
            f(TxnFailure::Expired),
        ),
        (
            "for another agent",
            txn(&txn_claims("spiffe://acme.example/agents/other")),
            &me,
            f(TxnFailure::AgentMismatch),
        ),
        (
            "requesting workload is another agent",
            c(&|m| set(m, "rctx", json!({"req_wl": "spiffe://acme.example/agents/other"}))),
            &me,
            f(TxnFailure::AgentMismatch),
        ),
        (
            "for the delegator, naming this agent as requesting workload",
            txn(&with(txn_claims(user), |m| set(m, "rctx", json!({"req_wl": AGENT})))),
            &for_user,
            task(NOW + 120),
        ),
        (
            "for the delegator, without requesting workload",
            txn(&txn_claims(user)),
            &for_user,
            f(TxnFailure::AgentMismatch),
        ),
        (
            "for a user, agent not delegated by them",
            txn(&with(txn_claims(user), |m| set(m, "rctx", json!({"req_wl": AGENT})))),
            &me,
            f(TxnFailure::AgentMismatch),
        ),
        (
            "typ JWT",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("txn-1"), Some("JWT"), &txn_claims(AGENT)),
            &me,
            f(TxnFailure::WrongType),
        ),
        (
            "no typ",
            mint_typ(&w.ed, Algorithm::EdDSA, Some("txn-1"), None, &txn_claims(AGENT)),
            &me,
            f(TxnFailure::WrongType),
        ),
        ("an access token in the Txn-Token header", at(&claims(IDP)), &me, f(TxnFailure::WrongProfile)),
        ("an SVID in the Txn-Token header", svid(&claims(SPIRE)), &me, f(TxnFailure::WrongProfile)),
        ("missing txn", c(&|m| drop(m.remove("txn"))), &me, f(TxnFailure::MissingClaim)),
        ("missing purp", c(&|m| drop(m.remove("purp"))), &me, f(TxnFailure::MissingClaim)),
        ("missing sub", c(&|m| drop(m.remove("sub"))), &me, f(TxnFailure::MissingClaim)),
        ("missing iat", c(&|m| drop(m.remove("iat"))), &me, f(TxnFailure::MissingClaim)),
        ("missing exp", c(&|m| drop(m.remove("exp"))), &me, f(TxnFailure::MissingClaim)),
        ("rctx not an object", c(&|m| set(m, "rctx", json!("x"))), &me, f(TxnFailure::MissingClaim)),
        ("wrong audience", c(&|m| set(m, "aud", json!("warden"))), &me, f(TxnFailure::WrongAudience)),
        ("lifetime over the limit", c(&|m| set(m, "exp", json!(NOW + 600))), &me, f(TxnFailure::LifetimeTooLong)),
        ("not yet valid", c(&|m| set(m, "nbf", json!(NOW + 100))), &me, f(TxnFailure::NotYetValid)),
        (
            "bad signature",
            mint_typ(&w.ed_other, Algorithm::EdDSA, Some("txn-1"), Some("txntoken+jwt"), &txn_claims(AGENT)),
            &me,
            f(TxnFailure::BadSignature),
        ),
        ("unknown issuer", c(&|m| set(m, "iss", json!("https://evil.example"))), &me, f(TxnFailure::UnknownIssuer)),
        ("malformed", "a.b".to_string(), &me, f(TxnFailure::Malformed)),
    ];
    for (name, token, a, want) in &cases {
        assert_eq!(&identity::verify_txn_token(&w.set, token, a, NOW), want, "{name}");
    }
    assert_eq!(TokenFailure::Txn(TxnFailure::AgentMismatch).code(), "txn_token_agent_mismatch");
}

#[test]
fn spiffe_id_table() {
    for (id, want) in [
        ("spiffe://acme.example/agents/bot-1", true),
        ("spiffe://acme.example/a", true),
        ("spiffe://acme.example", false),
        ("spiffe://acme.example/", false),
        ("spiffe://acme.example/a//b", false),
        ("spiffe://acme.example/a/../b", false),
        ("spiffe://Acme.example/a", false),
        ("spiffe://acme.example:443/a", false),
        ("spiffe://acme.example/a?x=1", false),
        ("spiffe:///a", false),
        ("SPIFFE://acme.example/a", false),
        ("https://acme.example/a", false),
    ] {
        assert_eq!(identity::is_spiffe_id(id), want, "{id}");
    }
}

fn bundle_with(revision: u64, extra: Value) -> warden_core::compile::CompiledBundle {
    let w = world();
    let mut b = json!({
        "format": "warden.bundle/v1", "revision": revision,
        "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z",
        "owner": "o", "authority": "a",
        "issuers": serde_json::to_value(&w.issuers).unwrap(),
        "tools": [{"id": "crm.read", "sensitivity": "read"}, {"id": "crm.write", "sensitivity": "write"}],
        "rules": []
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    let b: warden_core::bundle::Bundle = serde_json::from_value(b).unwrap();
    warden_core::compile::compile(&b).unwrap()
}

/// The filter reads the mTLS peer lazily (each property is a host call in Envoy): a check reads only what it needs
/// (the URI SAN where the issuer requires sender binding or a rule of the bundle can use it, the digest for a `cnf`
/// token), each at most once, and comes out as with the whole peer given; the cache reuses a result across peers
/// only where the check read nothing that differs.
#[test]
fn a_lazy_peer_is_read_only_where_a_check_needs_it() {
    let w = world();
    let digest = [7u8; 32];
    let other = "spiffe://acme.example/agents/other";
    let tokens = [
        ("plain", svid(&claims(SPIRE))),
        ("bound issuer", mint(&w.es, Algorithm::ES256, Some("bound-1"), &claims(BOUND))),
        ("cnf", svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"x5t#S256": b64(&digest)}))))),
        ("cnf mismatch", svid(&with(claims(SPIRE), |m| set(m, "cnf", json!({"x5t#S256": b64(&[8u8; 32])}))))),
    ];
    let peers = [
        None,
        Some(peer(Some(AGENT), None)),
        Some(peer(Some(AGENT), Some(digest))),
        Some(peer(Some(other), Some(digest))),
        Some(peer(None, Some(digest))),
    ];
    // Envoy's property values for a peer.
    let envoy = |p: &Option<PeerIdentity>, prop: PeerProperty| -> Option<String> {
        let p = p.as_ref()?;
        match prop {
            PeerProperty::UriSan => p.uri_san.clone(),
            PeerProperty::CertSha256 => p.cert_sha256.map(|d| d.iter().map(|b| format!("{b:02x}")).collect()),
        }
    };
    let using = bundle_with(
        1,
        json!({"rules": [{"id": "bound-writes", "effect": "allow", "tools": ["crm.write"], "require_sender_binding": true}]}),
    );
    let unused = bundle_with(2, json!({}));
    for (bundle, uses) in [(&using, true), (&unused, false)] {
        for (name, token) in &tokens {
            // Where nothing can read `sender_bound` (no rule requires binding, the issuer does not), it is false.
            let expect = |p: &Option<PeerIdentity>| {
                let given = identity::verify_presented(&w.set, token, p.as_ref(), NOW);
                if uses || *name == "bound issuer" {
                    given
                } else {
                    given.map(|a| Agent { sender_bound: false, ..a })
                }
            };
            let mut cache = TokenCache::new(8, 1 << 20);
            for (i, p) in peers.iter().enumerate() {
                let reads = RefCell::new(Vec::new());
                let read = |prop: PeerProperty| {
                    reads.borrow_mut().push(prop);
                    envoy(p, prop)
                };
                let lazy = Peer::host(&read);
                let at = NOW + i as i64;
                let case = format!("{name}, rules use binding: {uses}, peer {p:?}");
                assert_eq!(identity::verify_with_peer(&bundle.issuers, token, &lazy, at), expect(p), "{case}");
                let r = reads.borrow().clone();
                let uri = uses || *name == "bound issuer";
                let want: Vec<PeerProperty> =
                    [(uri, PeerProperty::UriSan), (name.starts_with("cnf"), PeerProperty::CertSha256)]
                        .into_iter()
                        .filter_map(|(read, prop)| read.then_some(prop))
                        .collect();
                assert_eq!(r, want, "{case}: the properties read, once each");
                // Through the cache (a fresh peer, whose reads are counted again): the first peer verifies, the
                // next ones hit, reusing the memo only when the check read nothing that differs.
                reads.borrow_mut().clear();
                let lazy = Peer::host(&read);
                assert_eq!(cache.verify_with_peer(bundle, token, &lazy, at), expect(p), "{case}, cached");
                assert!(reads.borrow().len() <= want.len(), "{case}, cached: {:?}", reads.borrow());
            }
            if !uses && *name == "plain" {
                assert_eq!(cache.stats(), (peers.len() as u64 - 1, 1), "{name}: every request after the first a hit");
            }
        }
    }
}

#[test]
fn cache_skips_the_signature_only() {
    let bundle = bundle_with(1, json!({}));
    let mut cache = TokenCache::new(8, 1 << 20);
    let token = svid(&claims(SPIRE));
    let good = Ok(agent("spire", NOW + 290));
    assert_eq!(cache.verify(&bundle, &token, None, NOW), good);
    assert_eq!(cache.stats(), (0, 1));
    assert_eq!(cache.verify(&bundle, &token, None, NOW + 1), good);
    assert_eq!(cache.stats(), (1, 1));
    assert_eq!(cache.len(), 1);
    // Time is checked again on a hit: within the skew still good, then expired, and the entry is gone.
    assert_eq!(cache.verify(&bundle, &token, None, NOW + 310), good);
    assert_eq!(cache.verify(&bundle, &token, None, NOW + 320), Err(TokenFailure::Expired));
    assert!(cache.is_empty());
    // A hit reuses an earlier check only forwards in time: a clock that went back is checked again.
    let early = svid(&with(claims(SPIRE), |c| {
        c.insert("iat".into(), json!(NOW + 25));
        c.insert("jti".into(), json!("tok-early"));
    }));
    assert!(cache.verify(&bundle, &early, None, NOW).is_ok(), "iat within the 30 s skew");
    assert!(cache.verify(&bundle, &early, None, NOW + 5).is_ok());
    assert_eq!(cache.verify(&bundle, &early, None, NOW - 10), Err(TokenFailure::IssuedInFuture));
    assert!(cache.verify(&bundle, &early, None, NOW).is_ok());
    // Sender binding is checked again on a hit.
    let bound = mint(&world().es, Algorithm::ES256, Some("bound-1"), &claims(BOUND));
    let p = peer(Some(AGENT), None);
    assert!(cache.verify(&bundle, &bound, Some(&p), NOW).is_ok());
    assert_eq!(cache.verify(&bundle, &bound, None, NOW), Err(TokenFailure::SenderNotMtls));
    let other = peer(Some("spiffe://acme.example/agents/other"), None);
    assert_eq!(cache.verify(&bundle, &bound, Some(&other), NOW), Err(TokenFailure::SenderMismatch));
    // A token that differs in one byte of its signature is not a hit. (The last character of a 64-byte signature
    // carries 2 bits, the other 4 must be zero: 'A' and 'Q' are both canonical, 'B' would be malformed base64.)
    let mut forged = bound.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    assert_eq!(cache.verify(&bundle, &forged, Some(&p), NOW), Err(TokenFailure::BadSignature));
    // Failures are not cached (the entries are `early` and `bound`).
    assert_eq!(cache.len(), 2);
    // Txn-Tokens go through the same cache; the agent match is checked again on a hit.
    let me = agent("acme-idp", NOW + 290);
    let t = txn(&txn_claims(AGENT));
    assert!(cache.verify_txn_token(&bundle, &t, &me, NOW).is_ok());
    assert!(cache.verify_txn_token(&bundle, &t, &me, NOW).is_ok());
    let someone = Agent { id: "spiffe://acme.example/agents/other".into(), ..me.clone() };
    assert_eq!(cache.verify_txn_token(&bundle, &t, &someone, NOW), Err(TokenFailure::Txn(TxnFailure::AgentMismatch)));
    // An agent token is never accepted as a Txn-Token through the cache, nor the reverse.
    assert_eq!(cache.verify_txn_token(&bundle, &bound, &me, NOW), Err(TokenFailure::Txn(TxnFailure::WrongProfile)));
    assert_eq!(cache.verify(&bundle, &t, None, NOW), Err(TokenFailure::WrongProfile));
}

#[test]
fn cache_is_cleared_by_a_new_bundle_and_revocations_still_apply() {
    use warden_core::decide::decide;
    use warden_core::facts::{Facts, Identity};
    let b1 = bundle_with(1, json!({"rules": [{"id": "r", "effect": "allow", "tools": ["crm.read"]}]}));
    let mut cache = TokenCache::default();
    let token = svid(&claims(SPIRE));
    let agent = cache.verify(&b1, &token, None, NOW).unwrap();
    assert_eq!(cache.len(), 1);
    let facts = |b: &warden_core::compile::CompiledBundle, a: Agent| Facts {
        environment: "prod".into(),
        identity: Identity::Verified(a),
        tool: b.tool_by_id("crm.read"),
    };
    assert_eq!(decide(&b1, &facts(&b1, agent), NOW).reason.code(), "allowed_by_rule");
    let b2 = bundle_with(
        2,
        json!({"rules": [{"id": "r", "effect": "allow", "tools": ["crm.read"]}], "revocations": {"token_ids": ["tok-1"]}}),
    );
    let agent = cache.verify(&b2, &token, None, NOW).unwrap();
    assert_eq!(cache.stats().0, 0, "a new bundle clears the cache: no hit");
    assert_eq!(decide(&b2, &facts(&b2, agent), NOW).reason.code(), "revoked_token");
    cache.clear();
    assert!(cache.is_empty() && cache.bytes() == 0);
}

#[test]
fn cache_is_bounded() {
    let bundle = bundle_with(1, json!({}));
    let mut cache = TokenCache::new(3, 1 << 20);
    let tokens: Vec<String> =
        (0..5).map(|i| svid(&with(claims(SPIRE), |m| set(m, "exp", json!(NOW + 100 + i))))).collect();
    for t in &tokens {
        cache.verify(&bundle, t, None, NOW).unwrap();
    }
    assert_eq!(cache.len(), 3);
    // The soonest-expiring entries went first: the last three are hits.
    let (hits, _) = cache.stats();
    for t in &tokens[2..] {
        cache.verify(&bundle, t, None, NOW).unwrap();
    }
    assert_eq!(cache.stats().0, hits + 3);
    // Bytes bound: a cache too small for any token stores none, and still verifies.
    let mut tiny = TokenCache::new(100, 64);
    assert!(tiny.verify(&bundle, &tokens[0], None, NOW).is_ok());
    assert!(tiny.is_empty());
    let mut small = TokenCache::new(100, 2 * 2048);
    for t in &tokens {
        small.verify(&bundle, t, None, NOW).unwrap();
    }
    assert!(
        small.bytes() <= 2 * 2048 && small.len() < 5 && !small.is_empty(),
        "{} entries, {} bytes",
        small.len(),
        small.bytes()
    );
}

#[test]
fn rules_select_on_delegation_and_sender_binding() {
    use warden_core::decide::decide;
    use warden_core::facts::{Facts, Identity};
    let user = "https://login.acme.example/users/alice";
    let b = bundle_with(
        1,
        json!({"rules": [
            {"id": "for-acme-users", "effect": "allow", "tools": ["crm.read"], "delegators": ["https://login.acme.example/users/*"], "max_delegation_depth": 1},
            {"id": "direct-bound-writes", "effect": "allow", "tools": ["crm.write"], "max_delegation_depth": 0, "require_sender_binding": true}
        ]}),
    );
    let delegated = |chain: Vec<&str>, delegator: &str| Agent {
        delegation: Some(Delegation {
            delegator: delegator.into(),
            chain: chain.into_iter().map(String::from).collect(),
        }),
        ..agent("acme-idp", NOW + 290)
    };
    let decide_for = |a: Agent, tool: &str| {
        let d = decide(
            &b,
            &Facts { environment: "prod".into(), identity: Identity::Verified(a), tool: b.tool_by_id(tool) },
            NOW,
        );
        format!("{}:{}", d.reason.code(), d.rule_id())
    };
    assert_eq!(decide_for(delegated(vec![], user), "crm.read"), "allowed_by_rule:for-acme-users");
    assert_eq!(
        decide_for(delegated(vec![], "https://evil.example/users/alice"), "crm.read"),
        "no_matching_rule:default"
    );
    assert_eq!(decide_for(agent("acme-idp", NOW + 290), "crm.read"), "no_matching_rule:default");
    // A nested actor never widens anything: depth 2 is over this rule's cap.
    assert_eq!(
        decide_for(delegated(vec!["spiffe://acme.example/agents/admin/root"], user), "crm.read"),
        "no_matching_rule:default"
    );
    assert_eq!(
        decide_for(Agent { sender_bound: true, ..agent("spire", NOW + 290) }, "crm.write"),
        "allowed_by_rule:direct-bound-writes"
    );
    assert_eq!(decide_for(agent("spire", NOW + 290), "crm.write"), "no_matching_rule:default");
    assert_eq!(
        decide_for(Agent { sender_bound: true, ..delegated(vec![], user) }, "crm.write"),
        "no_matching_rule:default"
    );

    // Validation.
    let errors = |rules: Value| {
        let w = world();
        let b: warden_core::bundle::Bundle = serde_json::from_value(json!({
            "format": "warden.bundle/v1", "revision": 1, "issued_at": "2026-01-01T00:00:00Z",
            "expires_at": "2027-01-01T00:00:00Z", "owner": "o", "authority": "a",
            "issuers": serde_json::to_value(&w.issuers).unwrap(),
            "tools": [{"id": "crm.read", "sensitivity": "read"}], "rules": rules
        }))
        .unwrap();
        warden_core::compile::compile(&b).unwrap_err().to_string()
    };
    assert_eq!(
        errors(json!([{"id": "d", "effect": "deny", "require_sender_binding": true}])),
        "/rules/0/require_sender_binding: not allowed on a deny rule: a deny must not stop applying to requests without mTLS"
    );
    assert_eq!(
        errors(json!([{"id": "d", "effect": "allow", "delegators": ["a*b"]}])),
        "/rules/0/delegators/0: invalid delegator pattern \"a*b\": use an exact id, a prefix ending in \"*\", or \"*\""
    );
    assert_eq!(
        errors(json!([{"id": "d", "effect": "allow", "delegators": []}])),
        "/rules/0/delegators: empty list: omit the field to match everything"
    );
}

#[test]
fn issuer_profile_errors() {
    let w = world();
    let base = |i: usize| serde_json::to_value(&w.issuers[i]).unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (with(base(1), |m| set(m, "claims", json!({"agent_id": "client_id"}))), "/issuers/0/claims/agent_id: must be \"sub\" for profile \"spiffe_jwt_svid\": a JWT-SVID names its workload in sub"),
        (with(base(1), |m| set(m, "delegation", json!({"max_depth": 1}))), "/issuers/0/delegation: not allowed for profile \"spiffe_jwt_svid\": only oauth_access_token issuers (RFC 8693 token exchange) delegate"),
        (with(base(0), |m| set(m, "delegation", json!({"max_depth": 0}))), "/issuers/0/delegation/max_depth: must be 1 to 8, found 0"),
        (with(base(0), |m| set(m, "delegation", json!({"max_depth": 9}))), "/issuers/0/delegation/max_depth: must be 1 to 8, found 9"),
        (with(base(3), |m| set(m, "claims", json!({"agent_id": "sub", "task_id": "txn"}))), "/issuers/0/claims: not allowed for profile \"txn_token\": the task comes from txn, purp and exp"),
        (with(base(3), |m| set(m, "require_sender_binding", json!(true))), "/issuers/0/require_sender_binding: not allowed for profile \"txn_token\": a Transaction Token is bound to the agent through its subject"),
    ];
    for (issuer, want) in cases {
        let issuer: Issuer = serde_json::from_value(issuer).unwrap();
        let got: Vec<String> = IssuerSet::compile(&[issuer]).unwrap_err().iter().map(|e| e.to_string()).collect();
        assert_eq!(got, vec![want.to_string()]);
    }
    // The profile is required, and spelled exactly.
    let mut v = base(1);
    v.as_object_mut().unwrap().remove("profile");
    assert!(serde_json::from_value::<Issuer>(v).unwrap_err().to_string().contains("missing field `profile`"));
    let v = with(base(1), |m| set(m, "profile", json!("jwt")));
    assert!(serde_json::from_value::<Issuer>(v).unwrap_err().to_string().contains("unknown variant `jwt`"));
}

/// Every RSA algorithm and ES384 verify with the pre-parsed key and the algorithm's own hash and padding; a
/// signature made for one algorithm never passes under another's header.
#[test]
fn every_algorithm_verifies_with_its_own_hash_and_padding() {
    use p384::ecdsa::signature::Signer as _;
    const RSA_ALL: &str = "https://rsa.acme.example";
    const P384: &str = "https://p384.acme.example";
    let w = world();
    let es384 = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
    let point = es384.verifying_key().to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(48);
    let issuers: Vec<Issuer> = serde_json::from_value(json!([
        {
            "id": "rsa-all", "iss": RSA_ALL, "audiences": ["warden"],
            "jwks": {"keys": [with(w.rs.public.clone(), |k| drop(k.remove("alg")))]},
            "algorithms": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
            "max_token_lifetime_seconds": 600, "profile": "spiffe_jwt_svid"
        },
        {
            "id": "p384", "iss": P384, "audiences": ["warden"],
            "jwks": {"keys": [{"kty": "EC", "crv": "P-384", "kid": "es384-1",
                "x": b64(x), "y": b64(y)}]},
            "algorithms": ["ES384"], "max_token_lifetime_seconds": 600, "profile": "spiffe_jwt_svid"
        }
    ]))
    .unwrap();
    let set = IssuerSet::compile(&issuers).unwrap();
    let split = |t: &str| {
        let dot = t.rfind('.').unwrap();
        (t[..dot].to_string(), t[dot + 1..].to_string())
    };

    let algs =
        [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
    let tokens: Vec<String> =
        algs.iter().map(|a| mint_typ(&w.rs, *a, Some("rs-1"), Some("JWT"), &claims(RSA_ALL))).collect();
    for (a, token) in algs.iter().zip(&tokens) {
        assert_eq!(identity::verify(&set, token, NOW), Ok(agent("rsa-all", NOW + 290)), "{a:?}");
        for (b, other) in algs.iter().zip(&tokens) {
            if a != b {
                let forged = format!("{}.{}", split(token).0, split(other).1);
                assert_eq!(identity::verify(&set, &forged, NOW), Err(TokenFailure::BadSignature), "{b:?} as {a:?}");
            }
        }
    }

    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES384","kid":"es384-1","typ":"JWT"}"#),
        b64(claims(P384).to_string().as_bytes())
    );
    let sig: p384::ecdsa::Signature = es384.sign(input.as_bytes());
    let good = format!("{input}.{}", b64(&sig.to_bytes()));
    assert_eq!(identity::verify(&set, &good, NOW), Ok(agent("p384", NOW + 290)));
    // Another message's signature, and a truncated one, are bad signatures.
    let other: p384::ecdsa::Signature = es384.sign(b"another message");
    let wrong = format!("{input}.{}", b64(&other.to_bytes()));
    assert_eq!(identity::verify(&set, &wrong, NOW), Err(TokenFailure::BadSignature));
    let short = format!("{input}.{}", b64(&sig.to_bytes()[..95]));
    assert_eq!(identity::verify(&set, &short, NOW), Err(TokenFailure::BadSignature));
}

/// Ed25519 tokens are verified as strictly as `verify_strict` (which refuses a small-order `R`), though Warden calls
/// the cheaper `verify` and compares `R` with the small-order encodings itself: a signature with `R` the identity
/// point, which `verify` alone accepts, is refused.
#[test]
fn ed25519_signature_with_small_order_r_is_refused() {
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::Verifier as _;
    use sha2::{Digest as _, Sha512};

    const EDGE: &str = "https://edge.acme.example";
    let a = Scalar::from_bytes_mod_order(seed());
    let public = EdwardsPoint::mul_base(&a).compress().to_bytes();
    let issuers: Vec<Issuer> = serde_json::from_value(json!([{
        "id": "edge", "iss": EDGE, "audiences": ["warden"], "algorithms": ["EdDSA"],
        "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": "edge-1"}]},
        "max_token_lifetime_seconds": 300, "profile": "spiffe_jwt_svid"
    }]))
    .unwrap();
    let set = IssuerSet::compile(&issuers).unwrap();
    let header = b64(br#"{"alg":"EdDSA","kid":"edge-1","typ":"JWT"}"#);
    let input = format!("{header}.{}", b64(claims(EDGE).to_string().as_bytes()));
    // s = r + k·a over R = [r]B, k = SHA-512(R || A || M) mod L (RFC 8032 section 5.1.6, by hand).
    let sign = |r: Scalar, r_bytes: [u8; 32]| {
        let digest = Sha512::new().chain_update(r_bytes).chain_update(public).chain_update(input.as_bytes()).finalize();
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&digest);
        let s = r + Scalar::from_bytes_mod_order_wide(&wide) * a;
        [r_bytes, s.to_bytes()].concat()
    };
    let honest_r = Scalar::from_bytes_mod_order(seed());
    let honest = sign(honest_r, EdwardsPoint::mul_base(&honest_r).compress().to_bytes());
    let token = |sig: &[u8]| format!("{input}.{}", b64(sig));
    assert!(identity::verify(&set, &token(&honest), NOW).is_ok(), "a signature made by hand the usual way verifies");

    // R = the identity (r = 0): [s]B - [k]A is the identity, whose encoding is R's bytes.
    let mut identity_r = [0u8; 32];
    identity_r[0] = 1;
    let forged = sign(Scalar::ZERO, identity_r);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&forged).unwrap();
    assert!(key.verify(input.as_bytes(), &sig).is_ok(), "the non-strict check accepts it");
    assert!(key.verify_strict(input.as_bytes(), &sig).is_err(), "the strict check refuses it");
    assert_eq!(identity::verify(&set, &token(&forged), NOW), Err(TokenFailure::BadSignature));
}

/// Under churn (many distinct tokens, as when every call brings a new one) the cache stays within its bound and
/// evicts expired entries before live ones, then the live ones that expire soonest.
#[test]
fn cache_evicts_expired_then_soonest_under_churn() {
    let bundle = bundle_with(1, json!({}));
    let mut cache = TokenCache::new(3, 1 << 20);
    let token = |i: i64, exp: i64| {
        svid(&with(claims(SPIRE), |m| {
            set(m, "exp", json!(exp));
            set(m, "jti", json!(format!("churn-{i}")));
        }))
    };
    let short = token(0, NOW + 20);
    let long = token(1, NOW + 250);
    let middle = token(2, NOW + 200);
    for t in [&short, &long, &middle] {
        cache.verify(&bundle, t, None, NOW).unwrap();
    }
    // At NOW + 100 `short` has expired: a new token evicts it, not a live one.
    let later = NOW + 100;
    let fresh = token(3, NOW + 290);
    cache.verify(&bundle, &fresh, None, later).unwrap();
    assert_eq!(cache.len(), 3);
    let (hits, misses) = cache.stats();
    for t in [&long, &middle, &fresh] {
        cache.verify(&bundle, t, None, later).unwrap();
    }
    assert_eq!(cache.stats(), (hits + 3, misses), "the live tokens are all still cached");
    // Then, all live: the soonest to expire (`middle`) goes.
    cache.verify(&bundle, &token(4, NOW + 280), None, later).unwrap();
    let (hits, misses) = cache.stats();
    cache.verify(&bundle, &middle, None, later).unwrap();
    assert_eq!(cache.stats(), (hits, misses + 1), "the soonest to expire was evicted");
    // A thousand distinct tokens through a cache of three: the bound holds throughout.
    for i in 10..1010 {
        cache.verify(&bundle, &token(i, NOW + 110 + i % 150), None, later).unwrap();
        assert!(cache.len() <= 3);
    }
}
