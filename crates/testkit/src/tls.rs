//! Throwaway certificates: a CA and one server certificate it signed, for Postgres and Kafka
//! listening on 127.0.0.1 with TLS.
//!
//! The server certificate names `127.0.0.1` (IP SAN) and `localhost` (DNS SAN), so clients can
//! verify it fully (`sslmode=verify-full`, librdkafka's default hostname check). Keys are RSA
//! 2048 and written as unencrypted PKCS#8 PEM, which Postgres, librdkafka and Java all read.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

use crate::KitError;

/// PEM files of a CA and a server certificate for 127.0.0.1, written into one directory.
#[derive(Debug, Clone)]
pub(crate) struct ServerCerts {
    /// The CA certificate clients trust (`sslrootcert`, `ssl.ca.location`).
    pub(crate) ca: PathBuf,
    /// The server certificate followed by the CA certificate.
    pub(crate) chain: PathBuf,
    /// The server's private key (PKCS#8, unencrypted, mode 0600).
    pub(crate) key: PathBuf,
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

impl ServerCerts {
    /// Generates a CA and a server certificate into `dir` (`ca.pem`, `server.crt`, `server.key`).
    pub(crate) fn generate(dir: &Path) -> Result<ServerCerts, KitError> {
        let (ca_cert, ca_key, leaf_cert, leaf_key) = issue().map_err(|e| KitError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other(format!("generating test certificates: {e}")),
        })?;
        let pem = |r: Result<Vec<u8>, ErrorStack>| {
            r.map_err(|e| KitError::Io {
                path: dir.to_owned(),
                source: std::io::Error::other(format!("encoding PEM: {e}")),
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        drop(ca_key);
        let ca_pem = pem(ca_cert.to_pem())?;
        let chain_pem = format!("{}{ca_pem}", pem(leaf_cert.to_pem())?);
        let key_pem = pem(leaf_key.private_key_to_pem_pkcs8())?;
        let certs = ServerCerts {
            ca: dir.join("ca.pem"),
            chain: dir.join("server.crt"),
            key: dir.join("server.key"),
            chain_pem,
            key_pem,
        };
        write(&certs.ca, &ca_pem, 0o644)?;
        write(&certs.chain, &certs.chain_pem, 0o644)?;
        write(&certs.key, &certs.key_pem, 0o600)?;
        Ok(certs)
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), KitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(KitError::io(path))?;
    f.write_all(text.as_bytes()).map_err(KitError::io(path))
}

type Issued = (X509, PKey<Private>, X509, PKey<Private>);

fn issue() -> Result<Issued, ErrorStack> {
    let ca_key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut ca = builder("walcast test CA", &ca_key)?;
    ca.set_issuer_name(name("walcast test CA")?.as_ref())?;
    ca.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    ca.sign(&ca_key, MessageDigest::sha256())?;
    let ca_cert = ca.build();

    let leaf_key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut leaf = builder("localhost", &leaf_key)?;
    leaf.set_issuer_name(ca_cert.subject_name())?;
    leaf.append_extension(BasicConstraints::new().build()?)?;
    leaf.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&leaf.x509v3_context(Some(&ca_cert), None))?;
    leaf.append_extension(san)?;
    leaf.sign(&ca_key, MessageDigest::sha256())?;
    Ok((ca_cert, ca_key, leaf.build(), leaf_key))
}

fn name(cn: &str) -> Result<openssl::x509::X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

/// A v3 certificate for `cn` with a random serial, valid from an hour ago for 30 days.
fn builder(cn: &str, key: &PKey<Private>) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(120, MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(Asn1Integer::from_bn(&serial)?.as_ref())?;
    b.set_subject_name(name(cn)?.as_ref())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    b.set_not_before(Asn1Time::from_unix(now - 3600)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(30)?.as_ref())?;
    b.set_pubkey(key)?;
    Ok(b)
}
