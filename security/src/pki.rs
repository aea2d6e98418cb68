//! Certificates made in memory: a worker's own certificate when it is given
//! none (nodes know it by the fingerprint it registers with), and the
//! certificate authorities of test clusters and of `sluice certs`, which sets
//! up TLS on a laptop.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From an hour ago for `days` days.
    Days(u64),
    /// It expired a day ago (for tests that must see it refused).
    Expired,
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a time after 1970")
}

fn window(params: &mut CertificateParams, validity: Validity) {
    let now = SystemTime::now();
    let (from, to) = match validity {
        Validity::Days(d) => (
            now - Duration::from_secs(3600),
            now + Duration::from_secs(d * 86_400),
        ),
        Validity::Expired => (
            now - Duration::from_secs(3 * 86_400),
            now - Duration::from_secs(86_400),
        ),
    };
    params.not_before = offset(from);
    params.not_after = offset(to);
}

fn params(common_name: &str, names: &[&str]) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(|e| format!("certificate names {names:?}: {e}"))?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    Ok(p)
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// The certificate's DER.
    pub der: CertificateDer<'static>,
}

/// A certificate authority whose key lives in memory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority")
    }
}

impl Authority {
    /// A new CA named `common_name`, valid ten years.
    pub fn new(common_name: &str) -> Result<Authority, String> {
        let mut p = params(common_name, &[])?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        window(&mut p, Validity::Days(3650));
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let issuer = CertifiedIssuer::self_signed(p, key).map_err(|e| e.to_string())?;
        Ok(Authority { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for `common_name` and the host `names` (DNS
    /// names or IP addresses), good for both server and client
    /// authentication.
    pub fn issue(
        &self,
        common_name: &str,
        names: &[&str],
        validity: Validity,
    ) -> Result<Issued, String> {
        let mut p = params(common_name, names)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        window(&mut p, validity);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }
}

/// A self-signed certificate for `common_name` and `names`, valid a year,
/// ready for a rustls server: what a worker serves `WorkerHost` with when it
/// is given no certificate.
pub fn self_signed(common_name: &str, names: &[&str]) -> Result<Arc<CertifiedKey>, String> {
    let mut p = params(common_name, names)?;
    window(&mut p, Validity::Days(365));
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    CertifiedKey::from_der(vec![cert.der().clone()], der_key, &crate::tls::provider())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}
