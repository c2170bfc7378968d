//! HTTPS for the control plane: rustls with a given certificate and key, or
//! a development CA and server certificate generated on first start.
//!
//! axum serves any [`Listener`]; this one accepts TCP and completes TLS
//! handshakes in their own tasks, so one slow client never stalls accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generate (once) a CA and a server certificate in this directory.
    Development {
        dir: PathBuf,
        names: Vec<String>,
    },
}

pub fn server_config(source: &TlsSource) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert, key) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::Development { dir, names } => development_certificate(dir, names)?,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("--tls-cert {}: cannot read it", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "--tls-cert {}: holds no `-----BEGIN CERTIFICATE-----` block",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&key).with_context(|| {
        format!(
            "--tls-key {}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--tls-cert/--tls-key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The development CA (`ca.pem`) and a server certificate signed by it,
/// created in `dir` on first use and reused after. Returns (cert, key) paths.
fn development_certificate(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    if ca_path.exists() && cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Gantry development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "gantry server");
    let server_cert = params.signed_by(&server_key, &issuer)?;

    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(
        &cert_path,
        format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    write_private(&key_path, server_key.serialize_pem().as_bytes())?;
    eprintln!(
        "\nDevelopment TLS: a CA and a server certificate for {names:?} were written to {dir}.\n\
         Trust the CA in launchers and the CLI with:\n\n    \
         export GANTRY_ADDITIONAL_ROOT_CAS=$(gantry ca-bundle encode {ca})\n",
        dir = dir.display(),
        ca = ca_path.display()
    );
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

/// The client's address on a TLS connection (a local type, so axum's
/// `ConnectInfo` can carry it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> PeerAddr {
        *stream.remote_addr()
    }
}

/// Accepts TLS connections for axum.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, incoming) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { incoming, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some((stream, peer)) => (stream, PeerAddr(peer)),
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerAddr(self.local))
    }
}
