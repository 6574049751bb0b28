//! TLS, with rustls and PEM files:
//!
//! - on the ZooKeeper port ([`Tls`], ZooKeeper's `secureClientPort`): the
//!   certificate, key and client CA re-read when they change, and the
//!   `x509` identity of a client that shows a certificate;
//! - between members ([`PeerTls`]): mutual TLS, where each member's
//!   certificate names it (`member-<id>` as a DNS subject alternative
//!   name), and a member must be the one its certificate names.
//!
//! Certificates are verified against the configured CA and nothing else: no
//! host name is looked up, forward or reverse (ZooKeeper's CVE-2026-24281
//! came from a reverse-DNS fallback).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::config::{ClientAuth, Config};

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {err}")]
    File { path: String, err: String },
    #[error("TLS settings: {0}")]
    Settings(String),
}

fn file_err(path: &Path, err: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), err: err.to_string() }
}

/// The files the TLS settings come from.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    auth: ClientAuth,
}

impl Files {
    fn paths(&self) -> Vec<&Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path()), self.ca.as_deref()].into_iter().flatten().collect()
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.paths().iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }
}

/// The live TLS settings of the secure port.
pub struct Tls {
    files: Files,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Reads the files named by `config`; `None` when there is no secure
    /// port.
    pub fn from_config(config: &Config) -> Result<Option<Tls>, TlsError> {
        if config.secure_client_addr.is_none() {
            return Ok(None);
        }
        let need =
            |p: &Option<PathBuf>, key: &str| p.clone().ok_or_else(|| TlsError::Settings(format!("{key} is not set")));
        let files = Files {
            cert: need(&config.tls_cert_file, "tls_cert_file")?,
            key: need(&config.tls_key_file, "tls_key_file")?,
            ca: config.tls_ca_file.clone(),
            auth: config.tls_client_auth,
        };
        let stamps = files.stamps();
        let current = build(&files)?;
        Ok(Some(Tls { files, current: RwLock::new(Arc::new(current)), stamps: Mutex::new(stamps) }))
    }

    /// An acceptor with the settings as they are now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }
}

/// TLS settings read from files that may change.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files if one of them changed since the last read. A
    /// change that does not load (a key that does not match, a file written
    /// halfway) keeps the settings in use, and is tried again next time.
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>>;

    /// Which settings, for the log.
    fn what(&self) -> &'static str;
}

impl Reload for Tls {
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = self.files.stamps();
        if *self.stamps.lock() == now {
            return None;
        }
        Some(build(&self.files).map(|config| {
            *self.current.write() = Arc::new(config);
            *self.stamps.lock() = now;
        }))
    }

    fn what(&self) -> &'static str {
        "client TLS"
    }
}

/// Checks the files every `every` until `stop`.
pub async fn reload_loop(tls: Arc<impl Reload>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let what = tls.what();
        match tls.reload_if_changed() {
            Some(Ok(())) => tracing::info!("{what} certificate files changed: new connections use them"),
            Some(Err(e)) => tracing::error!("{what} certificate files changed but do not load, keeping the old: {e}"),
            None => {}
        }
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn build(files: &Files) -> Result<ServerConfig, TlsError> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(e.to_string()))?;
    let builder = match (files.auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err(TlsError::Settings("tls_client_auth want or need needs tls_ca_file".into())),
        (auth, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider);
            let verifier = if auth == ClientAuth::Want { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| file_err(ca, e))?)
        }
    };
    builder.with_single_cert(chain, key).map_err(|e| file_err(&files.cert, format!("with its key: {e}")))
}

/// Mutual TLS between members, re-read when its files change (new
/// connections use the new files; open ones keep theirs).
pub struct PeerTls {
    files: Files,
    current: RwLock<(TlsAcceptor, TlsConnector)>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// Reads `peer_tls_*`; `None` when members talk plain TCP.
    pub fn from_config(config: &Config) -> Result<Option<PeerTls>, TlsError> {
        let (Some(cert), Some(key), Some(ca)) =
            (&config.peer_tls_cert_file, &config.peer_tls_key_file, &config.peer_tls_ca_file)
        else {
            return Ok(None);
        };
        let files = Files { cert: cert.clone(), key: key.clone(), ca: Some(ca.clone()), auth: ClientAuth::Need };
        let stamps = files.stamps();
        let current = build_peer(&files)?;
        Ok(Some(PeerTls { files, current: RwLock::new(current), stamps: Mutex::new(stamps) }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().0.clone()
    }

    pub fn connector(&self) -> TlsConnector {
        self.current.read().1.clone()
    }
}

impl Reload for PeerTls {
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = self.files.stamps();
        if *self.stamps.lock() == now {
            return None;
        }
        Some(build_peer(&self.files).map(|pair| {
            *self.current.write() = pair;
            *self.stamps.lock() = now;
        }))
    }

    fn what(&self) -> &'static str {
        "peer TLS"
    }
}

fn build_peer(files: &Files) -> Result<(TlsAcceptor, TlsConnector), TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    let ca = files.ca.as_deref().ok_or_else(|| TlsError::Settings("peer_tls_ca_file is not set".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(ca)?);
    let key_of = || PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| file_err(ca, e))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key_of()?)
        .map_err(|e| file_err(cert, format!("with its key: {e}")))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Settings(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(cert)?, key_of()?)
        .map_err(|e| file_err(cert, format!("with its key: {e}")))?;
    Ok((TlsAcceptor::from(Arc::new(server)), TlsConnector::from(Arc::new(client))))
}

/// The name a member's certificate carries: `member-<id>`.
pub fn member_name(id: u64) -> ServerName<'static> {
    ServerName::try_from(format!("member-{id}")).expect("member-<id> is a valid DNS name")
}

/// Does the certificate the peer showed name member `id`?
pub fn names_member(conn: &rustls::ServerConnection, id: u64) -> bool {
    conn.peer_certificates().and_then(|c| c.first()).is_some_and(|leaf| cert_names_member(leaf.as_ref(), id))
}

/// Exactly: among the certificate's DNS subject alternative names, the
/// member names (`member-…`) are `member-<id>` and nothing else. A name
/// with more (`member-3.example`, `member-30`), a common name without the
/// alternative name, or a certificate naming two members does not pass
/// (ZooKeeper's CVE-2023-44981 let an identity missing a part through).
pub fn cert_names_member(der: &[u8], id: u64) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return false };
    let members: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) if d.starts_with("member-") => Some(*d),
            _ => None,
        })
        .collect();
    members == [format!("member-{id}").as_str()]
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| file_err(ca, e))?;
    }
    Ok(roots)
}

/// The subject of the client's certificate, written as RFC 2253 and Java's
/// `X500Principal.getName()` write it (most specific first: `CN=alice,O=Example`):
/// the id of its `x509` identity.
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let name = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    format!("{name}={}", escape(atv.as_str().unwrap_or_default()))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    Some(rdns.join(","))
}

/// RFC 2253 §2.4: `,+"\<>;` escaped, and a leading `#` or space and a
/// trailing space.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{cert_names_member, escape};

    /// A self-signed certificate with these DNS alternative names and
    /// common name.
    fn cert(dns: &[&str], cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_member_is_exactly_the_member_its_certificate_names() {
        let table: [(&[&str], &str, bool); 9] = [
            (&["member-3"], "member-3", true),
            (&["member-3", "corral.example"], "x", true),
            (&["member-30"], "member-3", false),
            (&["member-3.example"], "member-3", false),
            (&["xmember-3"], "member-3", false),
            (&["member-03"], "member-3", false),
            (&[], "member-3", false),
            (&["member-2", "member-3"], "member-3", false),
            (&["member-2"], "member-3", false),
        ];
        for (dns, cn, ok) in table {
            assert_eq!(cert_names_member(&cert(dns, cn), 3), ok, "DNS names {dns:?}, CN {cn}");
        }
        assert!(!cert_names_member(b"not a certificate", 3));
    }

    #[test]
    fn subject_values_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("Smith, John"), "Smith\\, John");
        assert_eq!(escape("#1 "), "\\#1\\ ");
        assert_eq!(escape("a+b=c;d"), "a\\+b=c\\;d");
    }
}
