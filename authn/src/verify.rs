//! Signature verification with ring over jsonwebtoken's key material.
//!
//! jsonwebtoken 12 verifies through RustCrypto or aws-lc-rs only; ring is
//! the provider the project already builds (rustls uses it), and it
//! verified RS256 and ES256 about 4x faster than RustCrypto here
//! (`benches/authenticate.rs`). The
//! algorithm and key kind are matched explicitly: anything else is `false`.

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};

/// Whether `signature` over `message` verifies with `key` under `alg`.
/// The caller has already checked that the key's kind fits `alg`.
pub(crate) fn verify(key: &DecodingKey, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
    match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            let Some(params) = rsa_params(alg) else {
                return false;
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok()
        }
        DecodingKeyKind::SecretOrDer(bytes) => {
            let params: &dyn signature::VerificationAlgorithm = match alg {
                Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                Algorithm::EdDSA => &signature::ED25519,
                _ => return false,
            };
            UnparsedPublicKey::new(params, bytes)
                .verify(message, signature)
                .is_ok()
        }
    }
}

/// ring's RSA parameters for a JWS algorithm (moduli of 2048 to 8192 bits).
fn rsa_params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    #[test]
    fn verifies_only_with_the_algorithm_of_the_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let sig = pair.sign(&rng, b"msg").unwrap();
        let key = DecodingKey::from_ec_der(pair.public_key().as_ref());
        assert!(verify(&key, Algorithm::ES256, b"msg", sig.as_ref()));
        assert!(!verify(&key, Algorithm::ES256, b"other", sig.as_ref()));
        assert!(!verify(&key, Algorithm::ES384, b"msg", sig.as_ref()));
        assert!(!verify(&key, Algorithm::HS256, b"msg", sig.as_ref()));

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let sig = pair.sign(b"msg");
        let key = DecodingKey::from_ed_der(pair.public_key().as_ref());
        assert!(verify(&key, Algorithm::EdDSA, b"msg", sig.as_ref()));
        assert!(!verify(&key, Algorithm::ES256, b"msg", sig.as_ref()));
    }
}
