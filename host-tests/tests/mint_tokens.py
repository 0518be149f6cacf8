#!/usr/bin/env python3
"""Mints the tokens of host-tests/tests/it/token_attacks.rs with libraries independent of Warden's (PyJWT, jwcrypto,
`cryptography`, and the standard library's hmac for the algorithm-confusion token).

Usage: mint_tokens.py <now>   (seconds since the epoch: the host's clock when the requests are sent)

Prints one JSON object: {"jwks": {issuer id: public JWK}, "peer_digest_hex": ..., "tokens": {name: token}}.
Keys are generated fresh on every run; only their public halves leave this script.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

SUPPORT = "spiffe://acme.example/agents/support/bot-1"
ADMIN = "spiffe://acme.example/agents/admin/root"
OTHER = "spiffe://acme.example/agents/support/bot-9"
USER = "https://login.acme.example/users/alice"
SPIRE = "https://spire.acme.example"
LOGIN = "https://login.acme.example"
TXN = "https://txn.acme.example"
BOUND = "https://spire-bound.acme.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(algorithm_cls, public_key, kid: str, alg: str) -> dict:
    jwk = algorithm_cls.to_jwk(public_key, as_dict=True)
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def main() -> None:
    now = int(sys.argv[1])

    spire_key = ed25519.Ed25519PrivateKey.generate()
    attacker_ed = ed25519.Ed25519PrivateKey.generate()
    login_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bound_key = ec.generate_private_key(ec.SECP256R1())
    txn_key = jc_jwk.JWK.generate(kty="EC", crv="P-256", kid="txn-1")

    jwks = {
        "spire": public_jwk(jwt.algorithms.OKPAlgorithm, spire_key.public_key(), "spire-1", "EdDSA"),
        "login": public_jwk(jwt.algorithms.RSAAlgorithm, login_key.public_key(), "login-1", "RS256"),
        "bound": public_jwk(jwt.algorithms.ECAlgorithm, bound_key.public_key(), "bound-1", "ES256"),
        "txn": dict(json.loads(txn_key.export_public()), alg="ES256", use="sig"),
    }

    peer_digest = os.urandom(32)

    def svid(claims=None, typ="JWT", kid="spire-1", key=spire_key, drop=()):
        c = {"iss": SPIRE, "sub": SUPPORT, "aud": "warden", "iat": now - 10, "exp": now + 290}
        c.update(claims or {})
        for k in drop:
            c.pop(k, None)
        headers = {"kid": kid, "typ": typ} if kid is not None else {"typ": typ}
        return jwt.encode(c, key, algorithm="EdDSA", headers=headers)

    def access(claims=None, typ="at+jwt", drop=(), jti="jti-ok"):
        c = {"iss": LOGIN, "sub": SUPPORT, "aud": "warden", "iat": now - 10, "exp": now + 290, "jti": jti,
             "client_id": "support-bot"}
        c.update(claims or {})
        for k in drop:
            c.pop(k, None)
        return jwt.encode(c, login_key, algorithm="RS256", headers={"kid": "login-1", "typ": typ})

    def bound(claims=None):
        c = {"iss": BOUND, "sub": SUPPORT, "aud": "warden", "iat": now - 10, "exp": now + 290}
        c.update(claims or {})
        return jwt.encode(c, bound_key, algorithm="ES256", headers={"kid": "bound-1", "typ": "JWT"})

    def txn_token(claims=None, typ="txntoken+jwt", drop=()):
        c = {"iss": TXN, "sub": SUPPORT, "aud": "acme.example", "iat": now - 5, "exp": now + 120, "txn": "T-7001",
             "purp": "customer-support", "rctx": {"req_wl": SUPPORT}}
        c.update(claims or {})
        for k in drop:
            c.pop(k, None)
        header = {"alg": "ES256", "kid": "txn-1"}
        if typ is not None:
            header["typ"] = typ
        t = jc_jwt.JWT(header=header, claims=c)
        t.make_signed_token(txn_key)
        return t.serialize()

    def raw_jws(header: dict, payload: bytes, key=spire_key) -> str:
        """A compact JWS over arbitrary payload bytes (PyJWT's JWS layer, no claim handling)."""
        return jwt.api_jws.PyJWS().encode(payload, key, algorithm=header["alg"], headers=header)

    login_pem = login_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confusion_input = (
        b64(json.dumps({"alg": "HS256", "kid": "login-1", "typ": "at+jwt"}).encode())
        + "."
        + b64(json.dumps({"iss": LOGIN, "sub": ADMIN, "aud": "warden", "iat": now - 10, "exp": now + 290,
                          "jti": "jti-hs", "client_id": "x"}).encode())
    )
    confusion_sig = hmac.new(login_pem, confusion_input.encode(), hashlib.sha256).digest()

    def hs256(claims: dict, secret: bytes) -> str:
        """HS256 keyed with public key material (PyJWT refuses to; the attacker's own code would not)."""
        signing_input = (b64(json.dumps({"alg": "HS256", "kid": "login-1", "typ": "at+jwt"}).encode()) + "."
                         + b64(json.dumps(claims).encode()))
        return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())

    good = svid()
    h, p, s = good.split(".")
    tampered_payload = b64(json.dumps({"iss": SPIRE, "sub": ADMIN, "aud": "warden", "iat": now - 10,
                                       "exp": now + 290}).encode())

    tokens = {
        # Baselines that must go through.
        "svid_ok": good,
        "access_ok": access(),
        "access_app_typ_ok": access(typ="application/at+jwt"),
        "access_delegated_ok": access({"sub": USER, "act": {"sub": SUPPORT}}),
        "bound_ok": bound(),
        "cnf_ok": svid({"cnf": {"x5t#S256": b64(peer_digest)}}),
        "txn_ok": txn_token(),
        "txn_for_user_ok": txn_token({"sub": USER}),
        # Algorithm attacks.
        "hs256_rsa_pem_secret": confusion_input + "." + b64(confusion_sig),
        "hs256_rsa_modulus_secret": hs256(
            {"iss": LOGIN, "sub": ADMIN, "aud": "warden", "iat": now - 10, "exp": now + 290, "jti": "j",
             "client_id": "x"},
            base64.urlsafe_b64decode(jwks["login"]["n"] + "==")),
        "alg_none": jwt.encode({"iss": SPIRE, "sub": ADMIN, "aud": "warden", "iat": now - 10, "exp": now + 290},
                               None, algorithm="none", headers={"kid": "spire-1"}),
        "alg_none_capitalized": b64(b'{"alg":"None","kid":"spire-1"}') + "." + p + ".",
        "es256_at_eddsa_issuer": jwt.encode(
            {"iss": SPIRE, "sub": SUPPORT, "aud": "warden", "iat": now - 10, "exp": now + 290}, bound_key,
            algorithm="ES256", headers={"kid": "spire-1"}),
        # Keys.
        "kid_unknown": svid(kid="spire-9"),
        "kid_of_another_issuer": svid(kid="login-1"),
        "kid_missing": svid(kid=None),
        "attacker_key_right_kid": svid(key=attacker_ed),
        "tampered_payload": h + "." + tampered_payload + "." + s,
        # Profiles (typ).
        "access_typ_jwt": access(typ="JWT"),
        "access_typ_absent": access(typ=""),
        "access_typ_txntoken": access(typ="txntoken+jwt"),
        "svid_typ_at_jwt": svid(typ="at+jwt"),
        "svid_typ_txntoken": svid(typ="txntoken+jwt"),
        "txn_typ_at_jwt": txn_token(typ="at+jwt"),
        "txn_typ_absent": txn_token(typ=None),
        # Time and lifetime.
        "expired": svid({"iat": now - 400, "exp": now - 31}),
        "not_yet_valid": svid({"nbf": now + 60}),
        "issued_in_future": svid({"iat": now + 60, "exp": now + 300}),
        "lifetime_too_long": svid({"iat": now - 10, "exp": now + 3600}),
        # Audience, issuer, claims.
        "wrong_audience": svid({"aud": "billing"}),
        "wrong_issuer": svid({"iss": "https://spire.evil.example"}),
        "missing_exp": svid(drop=("exp",)),
        "missing_aud": svid(drop=("aud",)),
        "access_missing_jti": access(drop=("jti",)),
        "access_missing_client_id": access(drop=("client_id",)),
        "access_missing_iat": access(drop=("iat",)),
        "svid_non_spiffe_sub": svid({"sub": "support-bot-1"}),
        "svid_https_sub": svid({"sub": "https://acme.example/agents/support/bot-1"}),
        # Task context.
        "txn_other_agent": txn_token({"sub": OTHER, "rctx": {"req_wl": OTHER}}),
        "txn_user_other_workload": txn_token({"sub": USER, "rctx": {"req_wl": OTHER}}),
        "txn_expired": txn_token({"iat": now - 400, "exp": now - 100}),
        "txn_revoked_task": txn_token({"txn": "T-revoked"}),
        "txn_missing_purp": txn_token(drop=("purp",)),
        "txn_wrong_audience": txn_token({"aud": "warden"}),
        # Ephemeral credentials.
        "access_revoked_jti": access(jti="jti-revoked"),
        # Sender binding.
        "bound_for_binding": bound(),
        "cnf_mismatch": svid({"cnf": {"x5t#S256": b64(os.urandom(32))}}),
        "cnf_without_mtls": svid({"cnf": {"x5t#S256": b64(peer_digest)}}),
        # Delegation.
        "nested_act_grant": access({"sub": USER, "act": {"sub": SUPPORT, "act": {"sub": ADMIN}}}),
        "act_too_deep": access({"sub": USER, "act": {"sub": SUPPORT, "act": {"sub": OTHER, "act": {"sub": ADMIN}}}}),
        "act_on_svid_issuer": svid({"act": {"sub": SUPPORT}}),
        "act_without_sub": access({"sub": USER, "act": {"iss": LOGIN}}),
        # Encoding.
        "oversized": svid({"pad": "x" * 9000}),
        "non_base64_segment": h + "." + p[:-2] + "*!" + "." + s,
        "padded_base64": h + "=." + p + "." + s,
        "non_json_header": b64(b"alg=EdDSA;kid=spire-1") + "." + p + "." + s,
        "non_json_payload": raw_jws({"alg": "EdDSA", "kid": "spire-1", "typ": "JWT"}, b"sub=admin"),
        "payload_json_array": raw_jws({"alg": "EdDSA", "kid": "spire-1", "typ": "JWT"}, b"[1,2,3]"),
        "duplicate_sub_claim": raw_jws(
            {"alg": "EdDSA", "kid": "spire-1", "typ": "JWT"},
            ('{"iss":"%s","sub":"%s","sub":"%s","aud":"warden","iat":%d,"exp":%d}'
             % (SPIRE, SUPPORT, ADMIN, now - 10, now + 290)).encode()),
        "crit_header": raw_jws({"alg": "EdDSA", "kid": "spire-1", "typ": "JWT", "crit": ["exp"]},
                               json.dumps({"iss": SPIRE, "sub": SUPPORT, "aud": "warden", "iat": now - 10,
                                           "exp": now + 290}).encode()),
        "two_segments": h + "." + p,
        "empty_signature": h + "." + p + ".",
    }
    print(json.dumps({"jwks": jwks, "peer_digest_hex": peer_digest.hex(), "tokens": tokens}))


if __name__ == "__main__":
    main()
