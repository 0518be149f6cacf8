//! Agent token verification: real tokens minted by jsonwebtoken's encoder with keys generated here, one table of
//! every outcome, the issuer compile errors, and the header helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use warden_core::bundle::Issuer;
use warden_core::facts::{Agent, Task, TokenFailure};
use warden_core::identity::{self, bearer_token, trust_domain, IssuerSet};

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
            "claims": {"agent_id": "sub", "task_id": "task_id", "task_purpose": "purpose", "task_expires_at": "task_exp"}
        },
        {
            "id": "spire",
            "iss": "https://spire.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [es.public]},
            "algorithms": ["ES256"],
            "max_token_lifetime_seconds": 300
        },
        {
            "id": "login",
            "iss": "https://login.acme.example",
            "audiences": ["warden"],
            "jwks": {"keys": [strip_alg(&rs.public)]},
            "algorithms": ["RS256", "PS256"],
            "max_token_lifetime_seconds": 3600,
            "clock_skew_seconds": 0,
            "claims": {"agent_id": "client_id"}
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

fn mint(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    jsonwebtoken::encode(&header(alg, kid), claims, &key.encoding).unwrap()
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
    json!({"iss": iss, "sub": AGENT, "aud": "warden", "iat": NOW - 10, "exp": NOW + 290, "jti": "tok-1"})
}

fn with(mut v: Value, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    change(v.as_object_mut().unwrap());
    v
}

const IDP: &str = "https://idp.acme.example";
const SPIRE: &str = "https://spire.acme.example";
const LOGIN: &str = "https://login.acme.example";

fn agent(issuer: &str, expires_at: i64) -> Agent {
    Agent {
        id: AGENT.to_string(),
        trust_domain: "acme.example".to_string(),
        issuer: issuer.to_string(),
        token_id: Some("tok-1".to_string()),
        expires_at,
        task: None,
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
            mint(&w.rs, Algorithm::RS256, Some("rs-1"), &claims(LOGIN)),
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
            "no jti, URL agent id",
            ed(&with(claims(IDP), |m| {
                m.remove("jti");
                set(m, "sub", json!("https://agents.acme.example:8443/bot"));
            })),
            Ok(Agent {
                id: "https://agents.acme.example:8443/bot".into(),
                trust_domain: "agents.acme.example".into(),
                token_id: None,
                ..agent("acme-idp", NOW + 290)
            }),
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
    assert_eq!(w.set.ids().collect::<Vec<_>>(), vec!["acme-idp", "spire", "login"]);
    assert_eq!(w.set.len(), 3);
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
        ("Bearer  abc", Err(TokenFailure::Malformed)),
        ("Bearer\tabc", Err(TokenFailure::Malformed)),
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
