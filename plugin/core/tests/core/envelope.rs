//! Signed bundle envelope: sign/verify round trips, an independent implementation's JWS, and every failure.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use warden_core::envelope::{self, Algorithm, EnvelopeError, SigningKey, TrustedKeys};
use warden_core::time::parse_rfc3339;

const AUTHORITY: &str = "policy.acme.example";

fn now() -> i64 {
    parse_rfc3339("2026-06-01T12:00:00Z").unwrap()
}

fn bundle_json(issued_at: &str, expires_at: &str) -> Value {
    json!({
        "format": "warden.bundle/v1",
        "revision": 3,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "owner": "security@acme.example",
        "authority": AUTHORITY,
    })
}

fn payload() -> Vec<u8> {
    bundle_json("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z").to_string().into_bytes()
}

fn payload_with(change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = bundle_json("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z");
    change(&mut v);
    v.to_string().into_bytes()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Signs an arbitrary header + payload with the key's raw private scalar (to build JWSs `sign` would never make).
fn sign_raw(header: &str, payload: &[u8], key: &SigningKey) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let d = URL_SAFE_NO_PAD.decode(key.private_jwk()["d"].as_str().unwrap()).unwrap();
    let sig = match key.alg() {
        Algorithm::EdDSA => {
            use ed25519_dalek::Signer;
            let sk = ed25519_dalek::SigningKey::from_bytes(&d.try_into().unwrap());
            sk.sign(input.as_bytes()).to_bytes().to_vec()
        }
        Algorithm::ES256 => {
            use p256::ecdsa::signature::Signer;
            let sk = p256::ecdsa::SigningKey::from_slice(&d).unwrap();
            let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
            sig.to_bytes().to_vec()
        }
    };
    format!("{input}.{}", b64(&sig))
}

fn header(alg: &str, kid: &str) -> String {
    json!({"alg": alg, "kid": kid, "typ": "warden-bundle+jws"}).to_string()
}

struct Keys {
    ed: SigningKey,
    es: SigningKey,
    trusted: TrustedKeys,
}

fn keys() -> Keys {
    let ed = SigningKey::generate(Algorithm::EdDSA, "authority-ed-1").unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "authority-p256-1").unwrap();
    let trusted = TrustedKeys::from_jwks(&json!({"keys": [ed.public_jwk(), es.public_jwk()]})).unwrap();
    Keys { ed, es, trusted }
}

fn verify(signed: &str, trusted: &TrustedKeys) -> Result<envelope::VerifiedBundle, EnvelopeError> {
    envelope::verify(signed.as_bytes(), trusted, AUTHORITY, &["authority-revoked".to_string()], now())
}

#[test]
fn sign_then_verify_round_trips_for_both_algorithms() {
    let k = keys();
    for key in [&k.ed, &k.es] {
        let signed = envelope::sign(&payload(), key);
        let v = verify(&signed, &k.trusted).unwrap();
        assert_eq!(v.key_id, key.kid());
        assert_eq!(v.bundle.revision, 3);
        assert_eq!(v.digest, envelope::sha256_hex(&payload()));
        assert_eq!(v.digest.len(), 64);
        // A final newline in the file is fine.
        assert_eq!(verify(&format!("{signed}\n"), &k.trusted).unwrap().key_id, key.kid());
        let parts: Vec<&str> = signed.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": "warden-bundle+jws"}));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64, "ES256 is raw r||s, not DER");
    }
}

#[test]
fn sha256_hex_known_answer() {
    assert_eq!(envelope::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn verifies_a_jws_made_by_python_jwcrypto() {
    let jwks: Value = serde_json::from_str(include_str!("fixtures/jwcrypto-public.jwks.json")).unwrap();
    let trusted = TrustedKeys::from_jwks(&jwks).unwrap();
    assert_eq!(trusted.len(), 2);
    let payload = include_bytes!("fixtures/jwcrypto-payload.json");
    for (file, kid) in [
        (include_str!("fixtures/jwcrypto-eddsa.jws"), "jwcrypto-ed25519"),
        (include_str!("fixtures/jwcrypto-es256.jws"), "jwcrypto-p256"),
    ] {
        let v = envelope::verify(file.as_bytes(), &trusted, AUTHORITY, &[], now()).unwrap();
        assert_eq!(v.key_id, kid);
        assert_eq!(v.bundle.revision, 7);
        assert_eq!(v.bundle.rules[0].id, "support-reads-crm");
        assert_eq!(v.digest, envelope::sha256_hex(payload));
        // ... and one flipped payload byte breaks it.
        let parts: Vec<&str> = file.trim().split('.').collect();
        let mut p = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        p[20] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
        assert_eq!(
            envelope::verify(tampered.as_bytes(), &trusted, AUTHORITY, &[], now()),
            Err(EnvelopeError::BadSignature { kid: kid.to_string() })
        );
    }
}

#[test]
fn typ_is_case_insensitive_and_may_carry_application_prefix() {
    let k = keys();
    for typ in ["application/warden-bundle+jws", "WARDEN-BUNDLE+JWS", "Application/Warden-Bundle+JWS"] {
        let h = json!({"alg": "EdDSA", "kid": k.ed.kid(), "typ": typ}).to_string();
        assert!(verify(&sign_raw(&h, &payload(), &k.ed), &k.trusted).is_ok(), "{typ}");
    }
}

#[test]
fn issued_at_up_to_300_seconds_ahead_is_accepted() {
    let k = keys();
    let at = |secs: i64| warden_core::time::format_rfc3339(now() + secs);
    let ok = bundle_json(&at(300), "2026-07-01T00:00:00Z").to_string();
    assert!(verify(&envelope::sign(ok.as_bytes(), &k.ed), &k.trusted).is_ok());
    // One second before expiry is still fine; at expiry it is not.
    let last = bundle_json("2026-06-01T00:00:00Z", &at(1)).to_string();
    assert!(verify(&envelope::sign(last.as_bytes(), &k.ed), &k.trusted).is_ok());
}

#[test]
fn every_failure_has_its_own_error() {
    let k = keys();
    let other_ed = SigningKey::generate(Algorithm::EdDSA, "authority-ed-1").unwrap(); // same kid, other key
    let unknown = SigningKey::generate(Algorithm::EdDSA, "stranger").unwrap();
    let revoked = SigningKey::generate(Algorithm::EdDSA, "authority-revoked").unwrap();
    let good = envelope::sign(&payload(), &k.ed);
    let parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let with_payload = |p: &[u8]| format!("{}.{}.{}", parts[0], b64(p), parts[2]);
    let kid = |s: &str| s.to_string();
    let at = |secs: i64| warden_core::time::format_rfc3339(now() + secs);

    // An ES256 signature in DER form (what many libraries produce by default).
    let der = {
        let d = URL_SAFE_NO_PAD.decode(k.es.private_jwk()["d"].as_str().unwrap()).unwrap();
        let sk = p256::ecdsa::SigningKey::from_slice(&d).unwrap();
        let input = format!("{}.{}", b64(header("ES256", k.es.kid()).as_bytes()), b64(&payload()));
        use p256::ecdsa::signature::Signer;
        let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
        (format!("{input}.{}", b64(sig.to_der().as_bytes())), sig.to_der().as_bytes().len())
    };

    let cases: Vec<(&str, String, EnvelopeError)> = vec![
        (
            "wrong key, same kid",
            envelope::sign(&payload(), &other_ed),
            EnvelopeError::BadSignature { kid: kid("authority-ed-1") },
        ),
        (
            "tampered payload",
            with_payload(&payload_with(|v| v["revision"] = json!(4))),
            EnvelopeError::BadSignature { kid: kid("authority-ed-1") },
        ),
        (
            "tampered header (same meaning, other bytes)",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"EdDSA", "kid":"authority-ed-1","typ":"warden-bundle+jws"}"#),
                parts[1],
                parts[2]
            ),
            EnvelopeError::BadSignature { kid: kid("authority-ed-1") },
        ),
        (
            "tampered signature",
            {
                let mut s = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
                s[0] ^= 0x80;
                format!("{}.{}.{}", parts[0], parts[1], b64(&s))
            },
            EnvelopeError::BadSignature { kid: kid("authority-ed-1") },
        ),
        (
            "ES256 signature from another P-256 key",
            sign_raw(&header("ES256", k.es.kid()), &payload(), &SigningKey::generate(Algorithm::ES256, "x").unwrap()),
            EnvelopeError::BadSignature { kid: kid("authority-p256-1") },
        ),
        (
            "expired",
            envelope::sign(bundle_json("2026-05-01T00:00:00Z", "2026-06-01T12:00:00Z").to_string().as_bytes(), &k.ed),
            EnvelopeError::Expired { expires_at: kid("2026-06-01T12:00:00Z"), now: kid("2026-06-01T12:00:00Z") },
        ),
        (
            "issued in the future (301 s)",
            envelope::sign(bundle_json(&at(301), "2026-07-01T00:00:00Z").to_string().as_bytes(), &k.ed),
            EnvelopeError::IssuedInFuture { issued_at: kid("2026-06-01T12:05:01Z"), now: kid("2026-06-01T12:00:00Z") },
        ),
        ("unknown kid", envelope::sign(&payload(), &unknown), EnvelopeError::UnknownKid { kid: kid("stranger") }),
        (
            "revoked kid",
            envelope::sign(&payload(), &revoked),
            EnvelopeError::RevokedKid { kid: kid("authority-revoked") },
        ),
        (
            "alg mismatch: header ES256, key Ed25519",
            sign_raw(&header("ES256", k.ed.kid()), &payload(), &k.ed),
            EnvelopeError::AlgorithmMismatch {
                kid: kid("authority-ed-1"),
                header_alg: Algorithm::ES256,
                key_alg: Algorithm::EdDSA,
            },
        ),
        (
            "alg mismatch: header EdDSA, key P-256",
            sign_raw(&header("EdDSA", k.es.kid()), &payload(), &k.ed),
            EnvelopeError::AlgorithmMismatch {
                kid: kid("authority-p256-1"),
                header_alg: Algorithm::EdDSA,
                key_alg: Algorithm::ES256,
            },
        ),
        (
            "alg none",
            format!("{}.{}.", b64(header("none", k.ed.kid()).as_bytes()), b64(&payload())),
            EnvelopeError::EmptySegment { segment: "signature" },
        ),
        (
            "alg none with a dummy signature",
            format!("{}.{}.AAAA", b64(header("none", k.ed.kid()).as_bytes()), b64(&payload())),
            EnvelopeError::UnsupportedAlgorithm { alg: kid("none") },
        ),
        (
            "alg HS256",
            format!("{}.{}.AAAA", b64(header("HS256", k.ed.kid()).as_bytes()), b64(&payload())),
            EnvelopeError::UnsupportedAlgorithm { alg: kid("HS256") },
        ),
        (
            "alg in the wrong case",
            sign_raw(&header("eddsa", k.ed.kid()), &payload(), &k.ed),
            EnvelopeError::UnsupportedAlgorithm { alg: kid("eddsa") },
        ),
        (
            "wrong typ",
            sign_raw(&json!({"alg": "EdDSA", "kid": k.ed.kid(), "typ": "JWT"}).to_string(), &payload(), &k.ed),
            EnvelopeError::WrongType { found: Some(kid("JWT")) },
        ),
        (
            "missing typ",
            sign_raw(&json!({"alg": "EdDSA", "kid": k.ed.kid()}).to_string(), &payload(), &k.ed),
            EnvelopeError::WrongType { found: None },
        ),
        (
            "missing kid",
            sign_raw(&json!({"alg": "EdDSA", "typ": "warden-bundle+jws"}).to_string(), &payload(), &k.ed),
            EnvelopeError::MissingKid,
        ),
        (
            "extra header parameter (crit)",
            sign_raw(
                // Written out (not `json!`) so the column does not depend on serde_json's map order.
                &format!(r#"{{"alg":"EdDSA","crit":["exp"],"kid":"{}","typ":"warden-bundle+jws"}}"#, k.ed.kid()),
                &payload(),
                &k.ed,
            ),
            EnvelopeError::BadHeader {
                detail: kid("unknown field `crit`, expected one of `alg`, `kid`, `typ` at line 1 column 21"),
            },
        ),
        (
            "embedded jwk header parameter",
            sign_raw(
                &format!(
                    r#"{{"alg":"EdDSA","jwk":{},"kid":"{}","typ":"warden-bundle+jws"}}"#,
                    k.ed.public_jwk(),
                    k.ed.kid()
                ),
                &payload(),
                &k.ed,
            ),
            EnvelopeError::BadHeader {
                detail: kid("unknown field `jwk`, expected one of `alg`, `kid`, `typ` at line 1 column 20"),
            },
        ),
        (
            "duplicate header member",
            sign_raw(
                r#"{"alg":"EdDSA","alg":"ES256","kid":"authority-ed-1","typ":"warden-bundle+jws"}"#,
                &payload(),
                &k.ed,
            ),
            EnvelopeError::BadHeader { detail: kid("duplicate field `alg` at line 1 column 20") },
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64(b"alg=EdDSA"), parts[1], parts[2]),
            EnvelopeError::BadHeader { detail: kid("expected value at line 1 column 1") },
        ),
        ("garbage", "hello world".to_string(), EnvelopeError::NotCompact { found: 1 }),
        ("two dots missing", format!("{}{}{}", parts[0], parts[1], parts[2]), EnvelopeError::NotCompact { found: 1 }),
        ("one dot missing", format!("{}.{}{}", parts[0], parts[1], parts[2]), EnvelopeError::NotCompact { found: 2 }),
        ("four segments", format!("{good}.AAAA"), EnvelopeError::NotCompact { found: 4 }),
        ("JWS JSON serialization", json!({"payload": parts[1]}).to_string(), EnvelopeError::NotCompact { found: 1 }),
        ("empty", String::new(), EnvelopeError::NotCompact { found: 1 }),
        ("detached payload", format!("{}..{}", parts[0], parts[2]), EnvelopeError::EmptySegment { segment: "payload" }),
        (
            "bad base64 in the payload",
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            EnvelopeError::BadBase64 { segment: "payload", detail: kid("Invalid symbol 33, offset 239.") },
        ),
        (
            "padded base64 header",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            EnvelopeError::BadBase64 { segment: "header", detail: kid("Invalid padding") },
        ),
        (
            "standard (non-url) base64 signature",
            format!("{}.{}.+/{}", parts[0], parts[1], parts[2]),
            EnvelopeError::BadBase64 { segment: "signature", detail: kid("Invalid symbol 43, offset 0.") },
        ),
        (
            "ES256 signature in DER",
            der.0,
            EnvelopeError::SignatureLength { alg: Algorithm::ES256, expected: 64, found: der.1 },
        ),
        (
            "payload not a bundle (unknown field)",
            // The unknown member first, so the column does not depend on serde_json's map order.
            envelope::sign(&[b"{\"extra\":1,".as_slice(), &payload()[1..]].concat(), &k.ed),
            EnvelopeError::BadPayload {
                detail: kid("unknown field `extra`, expected one of `$schema`, `format`, `revision`, `issued_at`, \
                    `expires_at`, `owner`, `authority`, `issuers`, `approvers`, `mcp_servers`, `tools`, `rules`, `revocations`, `defaults`, `exception_policy`, `public_routes`, `protected_resources`, `limits` at line 1 column 8"),
            },
        ),
        (
            "payload not JSON",
            envelope::sign(b"revision: 3", &k.ed),
            EnvelopeError::BadPayload { detail: kid("expected value at line 1 column 1") },
        ),
        (
            "wrong format version",
            envelope::sign(&payload_with(|v| v["format"] = json!("warden.bundle/v2")), &k.ed),
            EnvelopeError::WrongFormat { found: kid("warden.bundle/v2") },
        ),
        (
            "authority mismatch",
            envelope::sign(&payload_with(|v| v["authority"] = json!("policy.evil.example")), &k.ed),
            EnvelopeError::AuthorityMismatch { expected: kid(AUTHORITY), found: kid("policy.evil.example") },
        ),
        (
            "bad issued_at",
            envelope::sign(&payload_with(|v| v["issued_at"] = json!("yesterday")), &k.ed),
            EnvelopeError::BadTimestamp { field: "issued_at", value: kid("yesterday") },
        ),
        (
            "bad expires_at",
            envelope::sign(&payload_with(|v| v["expires_at"] = json!("2026-07-01 00:00")), &k.ed),
            EnvelopeError::BadTimestamp { field: "expires_at", value: kid("2026-07-01 00:00") },
        ),
        (
            "expires_at not after issued_at",
            envelope::sign(bundle_json("2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z").to_string().as_bytes(), &k.ed),
            EnvelopeError::NotAfterIssued {
                issued_at: kid("2026-06-01T00:00:00Z"),
                expires_at: kid("2026-06-01T00:00:00Z"),
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, signed, want) in &cases {
        let got = verify(signed, &k.trusted);
        if got.as_ref().err() != Some(want) {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn error_messages_say_what_and_where() {
    let cases: Vec<(EnvelopeError, &str)> = vec![
        (EnvelopeError::NotCompact { found: 2 }, "signed bundle: not a JWS compact serialization: expected 3 dot-separated segments, found 2"),
        (EnvelopeError::UnknownKid { kid: "k9".into() }, "signed bundle: kid \"k9\" is not one of the pinned authority keys"),
        (EnvelopeError::RevokedKid { kid: "k1".into() }, "signed bundle: signing key \"k1\" has been revoked"),
        (
            EnvelopeError::AlgorithmMismatch { kid: "k1".into(), header_alg: Algorithm::ES256, key_alg: Algorithm::EdDSA },
            "signed bundle: protected header alg ES256 does not match the pinned key \"k1\", which is EdDSA",
        ),
        (EnvelopeError::WrongType { found: None }, "signed bundle: protected header typ is missing, expected \"warden-bundle+jws\""),
        (EnvelopeError::WrongType { found: Some("JWT".into()) }, "signed bundle: protected header typ is \"JWT\", expected \"warden-bundle+jws\""),
        (
            EnvelopeError::SignatureLength { alg: Algorithm::ES256, expected: 64, found: 71 },
            "signed bundle: ES256 signature must be 64 bytes, found 71 (ES256 signatures are the JOSE r||s form, not DER)",
        ),
        (
            EnvelopeError::Expired { expires_at: "2026-06-01T00:00:00Z".into(), now: "2026-06-02T00:00:00Z".into() },
            "signed bundle: expired at 2026-06-01T00:00:00Z (gateway clock 2026-06-02T00:00:00Z)",
        ),
        (
            EnvelopeError::AuthorityMismatch { expected: "a".into(), found: "b".into() },
            "signed bundle: /authority is \"b\", but this gateway trusts bundles from \"a\"",
        ),
        (EnvelopeError::BadKey { location: "/keys/1".into(), message: "duplicate kid \"k\"".into() }, "key /keys/1: duplicate kid \"k\""),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn trusted_keys_refuse_bad_jwks() {
    let ed = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "k2").unwrap();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut jwk = ed.public_jwk();
        change(&mut jwk);
        json!({"keys": [jwk]})
    };
    let mut es_wrong_alg = es.public_jwk();
    es_wrong_alg["alg"] = json!("EdDSA");
    let bad =
        |location: &str, message: &str| EnvelopeError::BadKey { location: location.into(), message: message.into() };
    let cases: Vec<(Value, EnvelopeError)> = vec![
        (json!([]), bad("/", "a JWKS must be an object {\"keys\": [...]}")),
        (json!({"keys": []}), bad("/keys", "no keys: at least one authority key must be pinned")),
        (json!({"keys": {}}), bad("/keys", "must be an array")),
        (json!({"keys": [ed.public_jwk()], "extra": 1}), bad("/", "unknown JWKS member \"extra\"")),
        (json!({"keys": [ed.public_jwk(), ed.public_jwk()]}), bad("/keys/1", "duplicate kid \"k1\"")),
        (json!({"keys": [ed.private_jwk()]}), bad("/keys/0", "private key material (\"d\") in a public key set")),
        (
            with(&|j| drop(j.as_object_mut().unwrap().remove("kid"))),
            bad("/keys/0", "\"kid\" is missing: every key needs a key id"),
        ),
        (with(&|j| j["kid"] = json!("")), bad("/keys/0", "kid must be 1 to 128 characters without control characters")),
        (with(&|j| j["x"] = json!("AAAA")), bad("/keys/0", "\"x\" must be 32 bytes, found 3")),
        (
            with(&|j| j["x"] = json!("not base64!")),
            bad("/keys/0", "\"x\" is not unpadded base64url: Invalid symbol 32, offset 3."),
        ),
        (
            with(&|j| j["crv"] = json!("Ed448")),
            bad("/keys/0", "unsupported curve \"Ed448\": bundle keys are Ed25519 (OKP) or P-256 (EC)"),
        ),
        (
            with(&|j| j["kty"] = json!("RSA")),
            bad("/keys/0", "unsupported kty \"RSA\": bundle keys are Ed25519 (OKP) or P-256 (EC)"),
        ),
        (
            with(&|j| j["kty"] = json!("oct")),
            bad("/keys/0", "unsupported kty \"oct\": bundle keys are Ed25519 (OKP) or P-256 (EC)"),
        ),
        (with(&|j| j["alg"] = json!("ES256")), bad("/keys/0", "\"alg\" is \"ES256\" but the key is EdDSA")),
        (json!({"keys": [es_wrong_alg]}), bad("/keys/0", "\"alg\" is \"EdDSA\" but the key is ES256")),
        (with(&|j| j["use"] = json!("enc")), bad("/keys/0", "\"use\" is \"enc\", expected \"sig\"")),
        (
            {
                let mut j = es.public_jwk();
                j["y"] = j["x"].clone();
                json!({"keys": [j]})
            },
            bad("/keys/0", "\"x\"/\"y\" is not a point on P-256"),
        ),
        (
            // The identity point: a small-order Ed25519 key that would accept forged signatures.
            with(&|j| {
                j["x"] = json!(b64(&{
                    let mut p = [0u8; 32];
                    p[0] = 1;
                    p
                }))
            }),
            bad("/keys/0", "\"x\" is a small-order (weak) Ed25519 public key"),
        ),
    ];
    let mut failures = Vec::new();
    for (jwks, want) in &cases {
        let got = TrustedKeys::from_jwks(jwks);
        if got.as_ref().err() != Some(want) {
            failures.push(format!("{jwks}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn signing_keys_round_trip_through_private_jwk() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let key = SigningKey::generate(alg, "rt").unwrap();
        let again = SigningKey::from_jwk(&key.private_jwk()).unwrap();
        assert_eq!(again.public_jwk(), key.public_jwk());
        assert_eq!(again.alg(), alg);
        // Same key, deterministic signatures (Ed25519, RFC 6979 ECDSA).
        assert_eq!(envelope::sign(&payload(), &again), envelope::sign(&payload(), &key));
        assert!(!format!("{key:?}").contains(key.private_jwk()["d"].as_str().unwrap()), "Debug leaks the secret");
        // Two generated keys differ.
        assert_ne!(SigningKey::generate(alg, "rt").unwrap().public_jwk(), key.public_jwk());
    }
    let ed = SigningKey::generate(Algorithm::EdDSA, "k").unwrap();
    let other = SigningKey::generate(Algorithm::EdDSA, "k").unwrap();
    let mut mixed = ed.private_jwk();
    mixed["d"] = other.private_jwk()["d"].clone();
    assert_eq!(
        SigningKey::from_jwk(&mixed).unwrap_err().to_string(),
        "key /: \"d\" does not belong to the public key \"x\""
    );
    assert_eq!(
        SigningKey::from_jwk(&ed.public_jwk()).unwrap_err().to_string(),
        "key /: not a private key: \"d\" is missing"
    );
    assert_eq!(
        SigningKey::generate(Algorithm::EdDSA, "").unwrap_err().to_string(),
        "key /kid: kid must be 1 to 128 characters without control characters"
    );
}

#[test]
fn trusted_keys_export_what_they_pinned() {
    let k = keys();
    assert_eq!(k.trusted.len(), 2);
    assert_eq!(k.trusted.kids().collect::<Vec<_>>(), vec!["authority-ed-1", "authority-p256-1"]);
    assert_eq!(k.trusted.algorithm("authority-p256-1"), Some(Algorithm::ES256));
    let again = TrustedKeys::from_jwks(&k.trusted.to_jwks()).unwrap();
    assert_eq!(again.to_jwks(), k.trusted.to_jwks());
    assert_eq!(k.ed.trusted_keys().kids().collect::<Vec<_>>(), vec!["authority-ed-1"]);
}
