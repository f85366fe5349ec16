//! Certificates for TLS `redis-server`s made at run time (a CA, a server
//! certificate, a client certificate) and the harness's own TLS client.
//!
//! Generated with `rcgen` (pure Rust, in-process, no `openssl` binary needed)
//! and written as PEM files into a temporary directory removed when the last
//! holder drops it or the process exits. The harness's client is `rustls` with
//! the aws-lc-rs provider passed explicitly (no process-level provider).

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, OnceLock},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// Whether a TLS server asks clients for a certificate (`--tls-auth-clients`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (`no`).
    No,
    /// A client certificate is asked for but not required (`optional`).
    Optional,
    /// A client certificate signed by the CA is required (`yes`): mutual TLS.
    Required,
}

impl ClientAuth {
    pub(super) fn arg(self) -> &'static str {
        match self {
            ClientAuth::No => "no",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "yes",
        }
    }
}

/// A CA, a server certificate for `127.0.0.1`/`localhost` (valid for both
/// `serverAuth` and `clientAuth`, as cluster nodes and replicas present it as
/// clients too) and a client certificate, as PEM files and in memory.
#[derive(Debug)]
pub struct TlsFiles {
    dir: DirGuard,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    ca_der: CertificateDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key_der: Vec<u8>,
    client_config: OnceLock<Arc<rustls::ClientConfig>>,
}

impl TlsFiles {
    /// Generates fresh certificates (ECDSA P-256) into a new temporary directory.
    pub fn generate() -> Arc<Self> {
        let dir = DirGuard::new();
        let ca_key = KeyPair::generate().expect("generating the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.distinguished_name.push(DnType::CommonName, "tower-jwt-auth test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-signing the CA");

        let leaf = |names: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("generating a key");
            let mut params = CertificateParams::new(names).expect("certificate parameters");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).expect("signing a certificate");
            (cert, key)
        };
        let (server, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "127.0.0.1",
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        let (client, client_key) =
            leaf(vec![], "tower-jwt-auth test client", vec![ExtendedKeyUsagePurpose::ClientAuth]);

        let files = Self {
            ca_pem: ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca.der().clone(),
            client_chain: vec![client.der().clone()],
            client_key_der: client_key.serialize_der(),
            client_config: OnceLock::new(),
            dir,
        };
        for (name, pem) in [
            ("ca.crt", files.ca_pem.as_str()),
            ("server.crt", &server.pem()),
            ("server.key", &server_key.serialize_pem()),
            ("client.crt", &files.client_cert_pem),
            ("client.key", &files.client_key_pem),
        ] {
            std::fs::write(files.dir.path.join(name), pem).expect("writing a PEM file");
        }
        Arc::new(files)
    }

    /// The CA certificate (PEM file): what clients trust (`--cacert`,
    /// `TlsCertificates::root_cert`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path.join("ca.crt")
    }

    /// The server certificate (PEM file), for `127.0.0.1` and `localhost`.
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path.join("server.crt")
    }

    /// The server's private key (PKCS#8 PEM file).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path.join("server.key")
    }

    /// The client certificate (PEM file), for mutual TLS (`--cert`).
    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.path.join("client.crt")
    }

    /// The client's private key (PKCS#8 PEM file), for mutual TLS (`--key`).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path.join("client.key")
    }

    /// The CA certificate as PEM bytes (for `redis::TlsCertificates::root_cert`).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca_pem.clone().into_bytes()
    }

    /// The client certificate as PEM bytes (for `redis::ClientTlsConfig::client_cert`).
    pub fn client_cert_pem(&self) -> Vec<u8> {
        self.client_cert_pem.clone().into_bytes()
    }

    /// The client key as PEM bytes (for `redis::ClientTlsConfig::client_key`).
    pub fn client_key_pem(&self) -> Vec<u8> {
        self.client_key_pem.clone().into_bytes()
    }

    /// The `redis-server` arguments serving TLS on `port` (and no plain TCP).
    pub(super) fn server_args(&self, port: u16, auth: ClientAuth) -> Vec<String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(self.server_cert_path()),
            "--tls-key-file".into(),
            path(self.server_key_path()),
            "--tls-ca-cert-file".into(),
            path(self.ca_path()),
            "--tls-auth-clients".into(),
            auth.arg().into(),
            // Used only when this server replicates from another one.
            "--tls-replication".into(),
            "yes".into(),
        ]
    }

    /// Opens a TLS connection to `127.0.0.1:<port>`, verifying the server
    /// against the CA and presenting the client certificate.
    pub(super) fn connect(&self, tcp: TcpStream) -> Result<Box<dyn Stream>, String> {
        let config = self.client_config.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).expect("the CA certificate is valid");
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key_der.clone()));
            // The provider is passed here rather than installed process-wide,
            // so this client never depends on what a test installs.
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("aws-lc-rs supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_client_auth_cert(self.client_chain.clone(), key)
                    .expect("the client certificate and key match");
            Arc::new(config)
        });
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }
}

/// A byte stream to a server: plain TCP or TLS.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A temporary directory removed on drop, or by a guard process when this
/// process exits without dropping it (a `static` holder never drops).
#[derive(Debug)]
struct DirGuard {
    path: PathBuf,
    guard: Option<(Child, ChildStdin)>,
}

impl DirGuard {
    fn new() -> Self {
        let path = super::fresh_dir();
        let mut child = Command::new("sh")
            .args(["-c", r#"read -r _; rm -rf "$1""#, "sh"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning sh for a temporary directory's guard");
        let stdin = child.stdin.take().expect("a stdin pipe");
        Self { path, guard: Some((child, stdin)) }
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
