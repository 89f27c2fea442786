//! A test PKI: one root per trust domain (rcgen, ECDSA P-256) issuing
//! X.509-SVIDs, written as the files a proxy's `identity.files` reads.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

/// A root CA of one trust domain.
pub(crate) struct Root {
    pub td: String,
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Root {
    pub(crate) fn new(td: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test root of {td}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            td: td.to_string(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes `cert.pem`, `key.pem` and `bundle.pem` for `spiffe://<td>/ns/<ns>/sa/<sa>`
    /// into `dir`; `expired` makes a certificate that ended in 2001.
    pub(crate) fn write_svid(&self, dir: &Path, ns: &str, sa: &str, expired: bool) {
        self.write_svid_for(
            dir,
            &format!("spiffe://{}/ns/{ns}/sa/{sa}", self.td),
            expired,
        );
    }

    pub(crate) fn write_svid_for(&self, dir: &Path, uri: &str, expired: bool) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        std::fs::create_dir_all(dir).expect("dir");
        crate::harness::write(&dir.join("cert.pem"), &cert.pem());
        crate::harness::write(&dir.join("key.pem"), &key.serialize_pem());
        crate::harness::write(&dir.join("bundle.pem"), &self.pem);
    }
}

/// The `identity:` lines of an anymesh.yaml reading the files `write_svid` wrote.
pub(crate) fn identity_files(dir: &Path) -> String {
    format!(
        "identity:\n  files: {{cert: {d}/cert.pem, key: {d}/key.pem, bundle: {d}/bundle.pem, reload_interval: 100ms}}\n",
        d = dir.display()
    )
}
