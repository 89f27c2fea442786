//! Making certificates: the CA's roots, the leaves it signs for workloads
//! (from nothing but a CSR's public key and the authenticated identity) and
//! its own server certificate.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::SecureRandom;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::prelude::FromDer;

use super::pem::unix;
use super::CaError;
use crate::spiffe::SpiffeId;

/// How far a leaf's `notBefore` is set back, at most, for clock skew.
const MAX_BACKDATE: Duration = Duration::from_secs(60);
/// How long a root the CA makes is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate just signed.
#[derive(Debug)]
pub(crate) struct Signed {
    pub cert: CertificateDer<'static>,
    /// Hex, for logs.
    pub serial: String,
    pub not_after: SystemTime,
}

/// The public key of a CSR, after checking the CSR's signature (proof that
/// the requester holds the key) and that the key is ECDSA P-256. Nothing
/// else of the CSR is read.
pub(crate) fn csr_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CaError> {
    let bad = |why: String| CaError::Refused(format!("csr: {why}"));
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| bad(format!("cannot parse: {e}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let key = SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|_| bad(format!("unsupported key type {}", spki.algorithm.algorithm)))?;
    if *key.algorithm() != rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(bad(
            "the key must be ECDSA P-256 (the key type of mesh certificates)".into(),
        ));
    }
    // Proof that the requester holds the key. (rcgen's CSR parser would
    // also copy the requested names, and refuses extensions it does not
    // know; neither matters here.)
    csr.verify_signature()
        .map_err(|e| bad(format!("bad signature: {e}")))?;
    Ok(key)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| CaError::Invalid("no randomness from the operating system".into()))?;
    // Positive and of full length.
    raw[0] = (raw[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&raw))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn odt(t: SystemTime) -> time::OffsetDateTime {
    let secs = i64::try_from(unix(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Validity from `now` for `ttl`, backdated by a tenth of `ttl` (at most a
/// minute) for clocks a little behind.
fn validity(params: &mut CertificateParams, now: SystemTime, ttl: Duration) -> SystemTime {
    let back = (ttl / 10).min(MAX_BACKDATE);
    params.not_before = odt(now - back);
    let not_after = now + ttl;
    params.not_after = odt(not_after);
    not_after
}

fn sign(
    params: &CertificateParams,
    key: &impl PublicKeyData,
    issuer: &Issuer<'_, KeyPair>,
    not_after: SystemTime,
) -> Result<Signed, CaError> {
    let serial = params
        .serial_number
        .as_ref()
        .map(|s| hex(&s.to_bytes()))
        .unwrap_or_default();
    let cert = params.signed_by(key, issuer)?;
    Ok(Signed {
        cert: cert.der().clone(),
        serial,
        // X.509 times have whole seconds.
        not_after: super::pem::from_unix(unix(not_after)),
    })
}

/// An X.509-SVID for `id`: exactly one URI SAN, an empty subject, CA:false,
/// digitalSignature, serverAuth + clientAuth.
pub(crate) fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    id: &SpiffeId,
    key: &SubjectPublicKeyInfo,
    ttl: Duration,
    now: SystemTime,
) -> Result<Signed, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names =
        vec![SanType::URI(id.as_str().try_into().map_err(|e| {
            CaError::Invalid(format!("identity {id}: {e}"))
        })?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_after = validity(&mut params, now, ttl);
    sign(&params, key, issuer, not_after)
}

/// The CA's own HTTPS server certificate for `sans` (host names or IP
/// addresses), with a fresh key.
pub(crate) fn server(
    issuer: &Issuer<'_, KeyPair>,
    sans: &[String],
    ttl: Duration,
    now: SystemTime,
) -> Result<(Signed, KeyPair), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "anymesh CA server");
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| CaError::Invalid(format!("--san {s}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let not_after = validity(&mut params, now, ttl);
    Ok((sign(&params, &key, issuer, not_after)?, key))
}

/// A self-signed root for `trust_domain` (generation `generation`), with
/// its new ECDSA P-256 key.
pub(crate) fn root(
    trust_domain: &str,
    generation: u32,
    now: SystemTime,
) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let serial = random_serial()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "anymesh");
    // Distinct names per root keep chain building unambiguous while two
    // roots are trusted at once.
    dn.push(
        DnType::CommonName,
        format!(
            "anymesh root {trust_domain} #{generation} {}",
            &hex(&serial.to_bytes())[..8]
        ),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}")
            .try_into()
            .map_err(|e| CaError::Invalid(format!("trust domain {trust_domain}: {e}")))?,
    )];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial);
    params.not_before = odt(now - Duration::from_secs(3600));
    params.not_after = odt(now + ROOT_LIFETIME);
    let cert = params.self_signed(&key)?;
    Ok((cert.der().clone(), key))
}
