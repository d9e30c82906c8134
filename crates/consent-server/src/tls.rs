//! TLS for the server: a certificate chain and key from PEM files (`--tls-cert`/`--tls-key`),
//! or a self-signed certificate made at start for local use (`--tls-self-signed`).
//!
//! The Web SDK in a browser always calls `https://{edgeDomain}/…`, so a page can only talk to
//! this server over TLS. [`TlsConfig`] is built before the server starts, so a missing file, a
//! PEM file without a certificate or key, or a key that does not match the certificate is a
//! [`TlsError`] at start and never a panic. The rustls configuration names its crypto provider
//! (ring) explicitly: nothing is installed process-wide. Only HTTP/1.1 is offered (ALPN
//! `http/1.1`), as the server speaks nothing else.
//!
//! The accept loop (`server.rs`) runs the handshake inside the connection's task, under the
//! connection cap, and closes a connection whose handshake has not finished within the header
//! read timeout: a client that opens a TCP connection and never sends its `ClientHello` holds a
//! connection slot no longer than one that never sends its request headers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file is not PEM of the expected kind.
    #[error("the TLS {what} file {} is not usable PEM: {detail}", path.display())]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the certificate and key (e.g. the key does not match the certificate, or
    /// its algorithm is not supported).
    #[error("the TLS certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made (e.g. a `--tls-name` that is neither a DNS
    /// name nor an IP address).
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// The self-signed certificate could not be written where asked.
    #[error("cannot write the self-signed certificate to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// What the server serves TLS with: a rustls configuration and the SHA-256 fingerprint of its
/// certificate. Build one with [`TlsConfig::from_pem_files`], [`TlsConfig::from_pem`] or
/// [`TlsConfig::self_signed`] and put it in [`crate::Config::tls`].
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    fingerprint: String,
    certificate_pem: Option<String>,
    spki_sha256: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("fingerprint", &self.fingerprint)
            .field("self_signed", &self.certificate_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("certificate", cert)?;
        let key_pem = read("key", key)?;
        let certs = parse_certs(&cert_pem).map_err(|detail| TlsError::Pem {
            what: "certificate",
            path: cert.to_owned(),
            detail,
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Pem {
            what: "key",
            path: key.to_owned(),
            detail: pem_detail(&err, "PRIVATE KEY"),
        })?;
        Self::new(certs, key_der, None)
    }

    /// [`TlsConfig::from_pem_files`] on text already read: `cert` is the chain, `key` the key.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let certs = parse_certs(cert).map_err(|detail| TlsError::Pem {
            what: "certificate",
            path: PathBuf::from("<memory>"),
            detail,
        })?;
        let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|err| TlsError::Pem {
            what: "key",
            path: PathBuf::from("<memory>"),
            detail: pem_detail(&err, "PRIVATE KEY"),
        })?;
        Self::new(certs, key_der, None)
    }

    /// A fresh self-signed certificate (ECDSA P-256) for `localhost`, `127.0.0.1` and `names`
    /// (DNS names or IP addresses), with a key that lives only in this process. For local use:
    /// a browser or client must be told to trust it ([`TlsConfig::certificate_pem`], or the
    /// [`TlsConfig::fingerprint`] for Chromium's `--ignore-certificate-errors-spki-list`… or a
    /// manual check).
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let mut alt_names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        for name in names {
            if !alt_names.contains(name) {
                alt_names.push(name.clone());
            }
        }
        let mut params = rcgen::CertificateParams::new(alt_names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "consent-server self-signed");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let mut tls = Self::new(vec![cert.der().clone()], key_der, Some(cert.pem()))?;
        tls.spki_sha256 = Some(STANDARD.encode(Sha256::digest(spki)));
        Ok(tls)
    }

    fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        certificate_pem: Option<String>,
    ) -> Result<Self, TlsError> {
        let fingerprint = certs.first().map(|c| fingerprint(c)).unwrap_or_default();
        let mut server =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            fingerprint,
            certificate_pem,
            spki_sha256: None,
        })
    }

    /// The SHA-256 fingerprint of the (leaf) certificate, as `openssl x509 -fingerprint
    /// -sha256` prints it: upper-case hex bytes separated by colons.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The base64 SHA-256 of the self-signed certificate's public key (its
    /// SubjectPublicKeyInfo), as Chromium's `--ignore-certificate-errors-spki-list` takes it;
    /// `None` for a certificate read from files.
    pub fn spki_sha256(&self) -> Option<&str> {
        self.spki_sha256.as_deref()
    }

    /// The certificate as PEM, when it is self-signed (made by [`TlsConfig::self_signed`]).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// Writes the self-signed certificate (PEM) to `path`, for a client to trust; does nothing
    /// for a certificate read from files.
    pub fn write_certificate(&self, path: &Path) -> Result<(), TlsError> {
        match &self.certificate_pem {
            Some(pem) => std::fs::write(path, pem).map_err(|source| TlsError::Write {
                path: path.to_owned(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The acceptor the accept loop runs handshakes with.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

/// Every certificate in a PEM text, in order; at least one.
fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_detail(&err, "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(pem_detail(
            &rustls::pki_types::pem::Error::NoItemsFound,
            "CERTIFICATE",
        ));
    }
    Ok(certs)
}

fn pem_detail(err: &rustls::pki_types::pem::Error, label: &str) -> String {
    match err {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no {label} section found"),
        other => other.to_string(),
    }
}

/// Upper-case hex bytes of the SHA-256 of `der`, separated by colons.
fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_look_like_openssls() {
        // `printf abc | sha256sum`: ba7816bf…
        let fp = fingerprint(b"abc");
        assert!(fp.starts_with("BA:78:16:BF:"), "{fp}");
        assert_eq!(fp.len(), 32 * 3 - 1);
    }

    #[test]
    fn a_self_signed_certificate_round_trips_through_pem() {
        let tls = TlsConfig::self_signed(&["consent.test".to_owned()]).unwrap();
        let pem = tls.certificate_pem().unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(fingerprint(&der), tls.fingerprint());
        // The SPKI hash is of the certificate's SubjectPublicKeyInfo (91 bytes for P-256).
        let spki = STANDARD.decode(tls.spki_sha256().unwrap()).unwrap();
        assert!(
            der.windows(91)
                .any(|w| Sha256::digest(w).as_slice() == spki.as_slice())
        );
    }

    #[test]
    fn bad_pem_is_an_error() {
        assert!(matches!(
            TlsConfig::from_pem(b"not pem", b"not pem"),
            Err(TlsError::Pem {
                what: "certificate",
                ..
            })
        ));
        let tls = TlsConfig::self_signed(&[]).unwrap();
        let cert = tls.certificate_pem().unwrap().as_bytes();
        assert!(matches!(
            TlsConfig::from_pem(
                cert,
                b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"
            ),
            Err(TlsError::Rustls(_) | TlsError::Pem { .. })
        ));
        // A key that is not the certificate's.
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            TlsConfig::from_pem(cert, other.as_bytes()),
            Err(TlsError::Rustls(_))
        ));
    }
}
