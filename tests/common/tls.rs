//! Test certificates: a CA made for the run and a server certificate it
//! signed for `127.0.0.1` and `localhost`, as PEM files in a temp dir.

use std::path::PathBuf;

pub struct TestTls {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: Vec<u8>,
}

pub fn test_tls(ca_name: &str) -> TestTls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("cert");
    let tls = TestTls {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        ca_der: ca_cert.der().to_vec(),
        _dir: dir,
    };
    std::fs::write(&tls.ca, ca_cert.pem()).expect("write CA");
    std::fs::write(&tls.cert, cert.pem()).expect("write cert");
    std::fs::write(&tls.key, key.serialize_pem()).expect("write key");
    tls
}
