//! rustls acceptors (writ's own listeners) and connectors (the provider).
//!
//! Everything here uses the ring provider explicitly, so no process-wide
//! default `CryptoProvider` has to be installed, and TLS 1.2 and 1.3 are
//! both offered: TLS 1.2 still matters for older MTAs and clients.
//!
//! Errors name the file and what is wrong with it, never its contents: a
//! key file's bytes must not end up in a log line.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

/// Where Debian (and derivatives) keep the system trust store as one PEM
/// bundle; read directly so no native-certs crate is needed.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS 1.3 first, so it is preferred when both sides speak it.
static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a TLS acceptor or connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A PEM section is broken (bad base64, no END line, ...).
    #[error("malformed PEM in {}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, without any of the file's contents.
        reason: &'static str,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("no certificate in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate could not be parsed or used.
    #[error("invalid certificate in {}: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// rustls's description of the problem.
        reason: String,
    },
    /// The key file holds no PKCS#8, PKCS#1 or SEC1 private key.
    #[error("no private key in {}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key could not be loaded (corrupt, or an unsupported
    /// algorithm).
    #[error("invalid private key in {}: {reason}", path.display())]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// rustls's description of the problem (never key material).
        reason: String,
    },
    /// The private key is not the one the certificate was issued for.
    #[error("key does not match certificate: key {}, certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA file holds no usable CA certificate.
    #[error("no CA certificate in {}", path.display())]
    NoCaCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A name that cannot be a TLS server name (DNS name or IP address).
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// A host name could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The `host:port` that was looked up.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// rustls refused the configuration itself.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the acceptor for writ's own listeners from a PEM certificate
/// chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1). Both
/// may be the same file.
pub fn acceptor(cert_pem: &Path, key_pem: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = load_certs(cert_pem)?;
    let key = load_key(key_pem)?;
    let provider = provider();

    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadPrivateKey {
                path: key_pem.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Checked here rather than at the first handshake, where a mismatch
    // would only show up as every client failing to verify.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_pem.to_owned(),
                key: key_pem.to_owned(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: cert_pem.to_owned(),
                reason: e.to_string(),
            });
        }
    }

    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds the connector for the provider: server certificates are verified
/// against the system roots ([`SYSTEM_CA_BUNDLE`]) or, when `ca_file` is
/// given, against the certificates in that file only (a private CA should
/// not widen trust to every public one, nor the other way round).
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(Arc::new(client_config(ca_file)?)))
}

/// The client configuration [`connector`] uses (also for PostgreSQL,
/// `state::postgres`): the same roots, versions and provider.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let (path, strict) = match ca_file {
        Some(path) => (path, true),
        None => (Path::new(SYSTEM_CA_BUNDLE), false),
    };
    let roots = load_roots(path, strict)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The name to verify the provider's certificate against: a DNS name or an
/// IP address (`[::1]` brackets are accepted).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// Whether plaintext to this upstream address is acceptable: only loopback,
/// where nothing leaves the host. IPv4-mapped IPv6 loopback counts.
pub fn plain_allowed(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Resolves `host:port` and says whether every address it resolves to is
/// loopback. All of them, not any: a connection may go to any address the
/// name resolves to, so one public address makes plaintext unsafe.
pub async fn resolve_is_loopback(host_port: &str) -> Result<bool, TlsError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .map_err(|source| TlsError::Resolve {
            host: host_port.to_owned(),
            source,
        })?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(plain_allowed))
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    // Zeroizing because the same helper reads private keys.
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// A description of a PEM error that carries none of the file's bytes
/// (pem::Error's own Display quotes the offending line).
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64 in a section",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable PEM",
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(TlsError::Pem {
            path: path.to_owned(),
            reason: pem_reason(&e),
        }),
    }
}

/// Loads trust anchors. `strict` (a configured CA file): every certificate
/// must parse, since a silently skipped one would surface later as an
/// unexplained verification failure. Not strict (the system bundle):
/// unparsable entries are skipped, as the distribution's bundle is not ours
/// to fix.
fn load_roots(path: &Path, strict: bool) -> Result<RootCertStore, TlsError> {
    let certs = match load_certs(path) {
        Err(TlsError::NoCertificate { path }) => return Err(TlsError::NoCaCertificate { path }),
        other => other?,
    };
    let mut roots = RootCertStore::empty();
    if strict {
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    } else {
        roots.add_parsable_certificates(certs);
    }
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct Pki {
        _dir: tempfile::TempDir,
        root: PathBuf,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        /// The server key as PKCS#8 DER, for re-encoding in other formats.
        key_der: Vec<u8>,
    }

    fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    /// A CA and a server certificate for localhost / 127.0.0.1 / ::1.
    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let (ca_cert, ca_key) = ca("writ test CA");
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let pki = Pki {
            ca: root.join("ca.pem"),
            cert: root.join("cert.pem"),
            key: root.join("key.pem"),
            key_der: key.serialize_der(),
            root,
            _dir: dir,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    /// Reads one DER header at `der[0..]`: (tag, header length, content length).
    fn der_header(der: &[u8]) -> (u8, usize, usize) {
        let tag = der[0];
        let first = der[1] as usize;
        if first < 0x80 {
            return (tag, 2, first);
        }
        let n = first & 0x7f;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (tag, 2 + n, len)
    }

    /// PKCS#8 wraps an EC key as SEQUENCE { INTEGER, AlgorithmIdentifier,
    /// OCTET STRING { ECPrivateKey } }; the OCTET STRING's content is SEC1.
    fn pkcs8_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
        let (_, hdr, _) = der_header(pkcs8);
        let mut rest = &pkcs8[hdr..];
        for _ in 0..2 {
            let (_, h, l) = der_header(rest);
            rest = &rest[h + l..];
        }
        let (tag, h, l) = der_header(rest);
        assert_eq!(tag, 0x04, "expected OCTET STRING");
        rest[h..h + l].to_vec()
    }

    /// Accepts one TLS connection, echoes what it reads back upper-cased.
    async fn echo_server(acceptor: TlsAcceptor) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = [0u8; 5];
            if tls.read_exact(&mut buf).await.is_ok() {
                buf.make_ascii_uppercase();
                let _ = tls.write_all(&buf).await;
                let _ = tls.shutdown().await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn handshake_and_exchange_with_configured_ca() {
        let pki = pki();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let connector = connector(Some(&pki.ca)).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"HELLO");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn tls12_clients_are_served() {
        let pki = pki();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
            .unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        tls.write_all(b"tls12").await.unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"TLS12");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn ip_address_server_name_verifies() {
        let pki = pki();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector(Some(&pki.ca))
            .unwrap()
            .connect(server_name("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"abcde").await.unwrap();
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ABCDE");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn system_roots_do_not_trust_a_private_ca() {
        let pki = pki();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connector(None)
            .unwrap()
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn another_ca_does_not_verify() {
        let pki = pki();
        let (other_ca, _) = ca("another test CA");
        let other = pki.root.join("other-ca.pem");
        std::fs::write(&other, other_ca.pem()).unwrap();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connector(Some(&other))
            .unwrap()
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_name_does_not_verify() {
        let pki = pki();
        let (addr, server) = echo_server(acceptor(&pki.cert, &pki.key).unwrap()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connector(Some(&pki.ca))
            .unwrap()
            .connect(server_name("mail.example.org").unwrap(), tcp)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        server.await.unwrap();
    }

    #[test]
    fn system_bundle_loads() {
        connector(None).unwrap();
    }

    #[test]
    fn sec1_key_is_accepted() {
        let pki = pki();
        let sec1 = pki.root.join("sec1.pem");
        std::fs::write(
            &sec1,
            pem_encode("EC PRIVATE KEY", &pkcs8_to_sec1(&pki.key_der)),
        )
        .unwrap();
        acceptor(&pki.cert, &sec1).unwrap();
    }

    #[test]
    fn combined_cert_and_key_file_is_accepted() {
        let pki = pki();
        let both = pki.root.join("both.pem");
        let mut text = std::fs::read_to_string(&pki.cert).unwrap();
        text.push_str(&std::fs::read_to_string(&pki.key).unwrap());
        std::fs::write(&both, text).unwrap();
        acceptor(&both, &both).unwrap();
    }

    #[test]
    fn pkcs1_section_is_recognised_as_a_key() {
        // No RSA key generator without another crate: a PKCS#1 section with
        // a broken body proves the section is taken as a key (and rejected
        // as invalid, not as missing).
        let pki = pki();
        let rsa = pki.root.join("rsa.pem");
        std::fs::write(&rsa, pem_encode("RSA PRIVATE KEY", b"\x30\x03\x02\x01\x00")).unwrap();
        let err = acceptor_err(&pki.cert, &rsa);
        assert!(matches!(err, TlsError::BadPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains("rsa.pem"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let pki = pki();
        let other = pki.root.join("other-key.pem");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = acceptor_err(&pki.cert, &other);
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("key does not match certificate"),
            "{err}"
        );
    }

    fn acceptor_err(cert: &Path, key: &Path) -> TlsError {
        match acceptor(cert, key) {
            Ok(_) => panic!("acceptor({}, {}) succeeded", cert.display(), key.display()),
            Err(e) => e,
        }
    }

    fn connector_err(ca: Option<&Path>) -> TlsError {
        match connector(ca) {
            Ok(_) => panic!("connector({ca:?}) succeeded"),
            Err(e) => e,
        }
    }

    fn assert_names(err: &TlsError, path: &Path, what: &str) {
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
    }

    #[test]
    fn bad_pem_files_name_the_file() {
        let pki = pki();
        let empty = pki.root.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let garbage = pki.root.join("garbage.pem");
        std::fs::write(&garbage, b"\x00\xffnot pem at all\n").unwrap();
        let broken = pki.root.join("broken.pem");
        std::fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = pki.root.join("missing.pem");

        let err = acceptor_err(&empty, &pki.key);
        assert_names(&err, &empty, "no certificate in");
        let err = acceptor_err(&pki.cert, &empty);
        assert_names(&err, &empty, "no private key in");
        let err = acceptor_err(&garbage, &pki.key);
        assert_names(&err, &garbage, "no certificate in");
        let err = acceptor_err(&pki.cert, &garbage);
        assert_names(&err, &garbage, "no private key in");
        let err = acceptor_err(&broken, &pki.key);
        assert_names(&err, &broken, "malformed PEM in");
        let err = acceptor_err(&missing, &pki.key);
        assert_names(&err, &missing, "cannot read");

        // A certificate given as the key, a key given as the certificate.
        let err = acceptor_err(&pki.cert, &pki.cert);
        assert_names(&err, &pki.cert, "no private key in");
        let err = acceptor_err(&pki.key, &pki.key);
        assert_names(&err, &pki.key, "no certificate in");

        let err = connector_err(Some(&empty));
        assert_names(&err, &empty, "no CA certificate in");
        let err = connector_err(Some(&pki.key));
        assert_names(&err, &pki.key, "no CA certificate in");
        let err = connector_err(Some(&missing));
        assert_names(&err, &missing, "cannot read");
    }

    #[test]
    fn errors_do_not_quote_key_material() {
        let pki = pki();
        let key_text = std::fs::read_to_string(&pki.key).unwrap();
        let body_line = key_text.lines().nth(1).unwrap().to_owned();
        // Truncate the key so its section never ends.
        let cut = pki.root.join("cut.pem");
        std::fs::write(&cut, &key_text[..key_text.len() / 2]).unwrap();
        let err = acceptor_err(&pki.cert, &cut);
        assert_names(&err, &cut, "malformed PEM in");
        assert!(!err.to_string().contains(&body_line[..16]), "{err}");
    }

    #[test]
    fn server_names() {
        assert!(server_name("smtp.example.org").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("").is_err());
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn plain_only_to_loopback() {
        let at = |ip: IpAddr| SocketAddr::new(ip, 25);
        assert!(plain_allowed(&at(Ipv4Addr::LOCALHOST.into())));
        assert!(plain_allowed(&at(Ipv4Addr::new(127, 0, 0, 2).into())));
        assert!(plain_allowed(&at(Ipv6Addr::LOCALHOST.into())));
        assert!(plain_allowed(&at(Ipv4Addr::LOCALHOST
            .to_ipv6_mapped()
            .into())));
        assert!(!plain_allowed(&at(Ipv4Addr::new(10, 0, 0, 1).into())));
        assert!(!plain_allowed(&at(Ipv4Addr::UNSPECIFIED.into())));
        assert!(!plain_allowed(&at(Ipv4Addr::new(192, 0, 2, 1)
            .to_ipv6_mapped()
            .into())));
    }

    #[tokio::test]
    async fn resolving_loopback() {
        assert!(resolve_is_loopback("127.0.0.1:25").await.unwrap());
        assert!(resolve_is_loopback("[::1]:25").await.unwrap());
        assert!(!resolve_is_loopback("192.0.2.1:25").await.unwrap());
        let err = resolve_is_loopback("no-port").await.unwrap_err();
        assert!(err.to_string().contains("no-port"), "{err}");
    }
}
