//! Agent tokens for the demo: JWTs signed with an issuer's private JWK (Ed25519 → EdDSA, P-256 → ES256), as the
//! example issuers in `policies/examples/keys/` would mint them. Test keys only.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// Signs tokens with one private key.
pub struct Minter {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
}

impl Minter {
    /// From a private JWK (`OKP`/`Ed25519` or `EC`/`P-256`, with `d` and `kid`).
    pub fn from_jwk(jwk: &Value) -> Result<Minter> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str).ok_or_else(|| anyhow!("JWK without `{name}`"));
        let kid = field("kid")?.to_string();
        let d = URL_SAFE_NO_PAD.decode(field("d")?).context("JWK `d` is not base64url")?;
        if d.len() != 32 {
            bail!("JWK `d` is {} bytes, expected 32", d.len());
        }
        let (der, alg) = match (field("kty")?, field("crv")?) {
            ("OKP", "Ed25519") => (pkcs8(ED25519_PREFIX, &d), Algorithm::EdDSA),
            ("EC", "P-256") => (pkcs8(P256_PREFIX, &d), Algorithm::ES256),
            (kty, crv) => bail!("JWK kty `{kty}` crv `{crv}`: only Ed25519 and P-256 keys mint demo tokens"),
        };
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
            _ => EncodingKey::from_ec_der(&der),
        };
        Ok(Minter { key, alg, kid })
    }

    /// A signed token with these claims (header `{"alg", "kid", "typ":"JWT"}`).
    pub fn mint(&self, claims: &Value) -> Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).context("cannot sign the token")
    }
}

/// PKCS#8 `PrivateKeyInfo` for an Ed25519 seed (RFC 8410), up to the 32 key bytes.
const ED25519_PREFIX: &[u8] =
    &[0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// PKCS#8 `PrivateKeyInfo` (id-ecPublicKey, prime256v1) around an RFC 5915 `ECPrivateKey` without the optional
/// public key, up to the 32 key bytes.
const P256_PREFIX: &[u8] = &[
    0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20,
];

fn pkcs8(prefix: &[u8], d: &[u8]) -> Vec<u8> {
    let mut der = prefix.to_vec();
    der.extend_from_slice(d);
    der
}
