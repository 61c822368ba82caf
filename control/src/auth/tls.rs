//! The cluster CA and the apiserver's serving certificate, made on first start.
//!
//! Files in the data dir: `ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key`. The CA is kept
//! across restarts (kubeconfigs trust it); the serving certificate is remade when the names it
//! must cover change (a new `--advertise-address` or `--tls-san`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{AuthError, io_err, write_private};

/// The PEM files of the CA and the serving certificate.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// `ca.crt`.
    pub ca_cert: PathBuf,
    /// `apiserver.crt`.
    pub serving_cert: PathBuf,
    /// `apiserver.key`.
    pub serving_key: PathBuf,
}

fn cert_err(e: impl std::fmt::Display) -> AuthError {
    AuthError::Certificate(e.to_string())
}

/// Makes (or reuses) the CA and a serving certificate for `names` (DNS names and IPs).
pub fn ensure_certificates(dir: &Path, names: &[String]) -> Result<Certificates, AuthError> {
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    if !ca_cert.exists() || !ca_key.exists() {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params().self_signed(&key).map_err(cert_err)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_cert, cert.pem()).map_err(io_err(&ca_cert))?;
    }
    let serving_cert = dir.join("apiserver.crt");
    let serving_key = dir.join("apiserver.key");
    let names_file = dir.join("apiserver.names");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_file).unwrap_or_default();
    if current != wanted || !serving_cert.exists() || !serving_key.exists() {
        let ca_key_pem = std::fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(cert_err)?;
        // The CA's parameters are fixed, so rebuilding them with its key names the same issuer
        // (subject and key identifier) as the certificate on disk, with no X.509 parser needed.
        let ca_params = ca_params();
        let issuer = Issuer::from_params(&ca_params, ca_key);
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("skiff-apiserver");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(cert_err),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        write_private(&serving_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&serving_cert, cert.pem()).map_err(io_err(&serving_cert))?;
        std::fs::write(&names_file, wanted).map_err(io_err(&names_file))?;
    }
    Ok(Certificates {
        ca_cert,
        serving_cert,
        serving_key,
    })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("skiff-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "skiff");
    dn
}

/// A rustls server config (HTTP/2 and HTTP/1.1) for the serving certificate.
pub fn server_config(certs: &Certificates) -> Result<Arc<rustls::ServerConfig>, AuthError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.serving_cert)
        .map_err(cert_err)?
        .collect::<Result<_, _>>()
        .map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_file(&certs.serving_key).map_err(cert_err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cert_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(cert_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_and_the_serving_cert_follows_its_names() {
        let dir = std::env::temp_dir().join(format!("skiff-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = ensure_certificates(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let ca = std::fs::read(&certs.ca_cert).unwrap();
        let serving = std::fs::read(&certs.serving_cert).unwrap();
        ensure_certificates(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(
            std::fs::read(&certs.serving_cert).unwrap(),
            serving,
            "same names: kept"
        );
        ensure_certificates(&dir, &["localhost".into(), "10.0.0.1".into()]).unwrap();
        assert_ne!(
            std::fs::read(&certs.serving_cert).unwrap(),
            serving,
            "new names: remade"
        );
        assert_eq!(std::fs::read(&certs.ca_cert).unwrap(), ca, "the CA stays");
        server_config(&certs).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
