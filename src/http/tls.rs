//! HTTPS for /metrics: the certificate (self-signed, made at start, as controller-runtime
//! does; or `tls.crt`/`tls.key` from a directory, e.g. a mounted cert-manager Secret,
//! followed as it is renewed) and
//! a listener that does the TLS handshakes off the accept loop, each bounded in time, a
//! few dozen at once, so a slow or silent client holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio_rustls::server::TlsStream;

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; the accept loop waits beyond.
const CONCURRENT_HANDSHAKES: usize = 64;

/// Server TLS settings (HTTP/1.1 only) with the certificate `resolver` picks.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> io::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// A fresh self-signed certificate for these names, only in memory.
pub fn self_signed(names: &[String]) -> io::Result<Arc<ServerConfig>> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec()).map_err(io::Error::other)?;
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let certified =
        CertifiedKey::from_der(vec![generated.cert.der().clone()], key.into(), &provider())
            .map_err(io::Error::other)?;
    server_config(Arc::new(SingleCertAndKey::from(certified)))
}

/// `tls.crt` (the chain, PEM) and `tls.key` (PEM) in `dir`: the layout of a
/// kubernetes.io/tls Secret mounted as a volume. Read now (an error if they cannot be),
/// and again whenever they change, so a renewed certificate is served without a restart.
pub fn from_dir(dir: &Path) -> io::Result<Arc<ServerConfig>> {
    let files = DirCertificate {
        dir: dir.to_owned(),
        current: Mutex::new((modified(dir), Arc::new(read_dir(dir)?))),
    };
    server_config(Arc::new(files))
}

fn read_dir(dir: &Path) -> io::Result<CertifiedKey> {
    let bad = |e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", dir.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).map_err(|e| bad(&e))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| bad(&e))
}

/// When the certificate files last changed (None: they cannot be read).
fn modified(dir: &Path) -> Option<SystemTime> {
    let time = |f: &str| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    };
    time("tls.crt").max(time("tls.key"))
}

/// The certificate in a directory, read again when its files change (a mounted Secret
/// is swapped at once, by a symlink). A change that cannot be read keeps the last good
/// certificate, and says so.
#[derive(Debug)]
struct DirCertificate {
    dir: PathBuf,
    current: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for DirCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl DirCertificate {
    /// The certificate to serve now.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let now = modified(&self.dir);
        if now != current.0 {
            current.0 = now;
            match read_dir(&self.dir) {
                Ok(certified) => {
                    tracing::info!(dir = %self.dir.display(), "metrics certificate reloaded");
                    current.1 = Arc::new(certified);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics certificate changed but cannot be read; serving the previous one");
                }
            }
        }
        current.1.clone()
    }
}

/// A listener whose connections have completed a TLS handshake (for `axum::serve`).
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let tcp = TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?;
        let (tx, handshaken) = mpsc::channel(CONCURRENT_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
        tokio::spawn(async move {
            while !tx.is_closed() {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little.
                        tracing::warn!(error = %e, "accepting a metrics connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { handshaken, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_makes_a_server_config() {
        let config = self_signed(&["localhost".into()]).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    fn write_cert(dir: &Path, name: &str) {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        std::fs::write(dir.join("tls.crt"), generated.cert.pem()).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), generated.signing_key.serialize_pem())
            .expect("tls.key");
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!("sg-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        write_cert(&dir, "first");
        let files = DirCertificate {
            dir: dir.clone(),
            current: Mutex::new((None, Arc::new(read_dir(&dir).expect("read")))),
        };
        let first = files.current().cert[0].clone();
        assert_eq!(files.current().cert[0], first, "unchanged files: the same");
        write_cert(&dir, "second");
        // File times can be coarse: make the change visible whatever the clock did.
        files.current.lock().expect("lock").0 = None;
        let renewed = files.current().cert[0].clone();
        assert_ne!(renewed, first, "the renewed certificate is served");
        std::fs::write(dir.join("tls.key"), "garbage").expect("break the key");
        files.current.lock().expect("lock").0 = None;
        assert_eq!(
            files.current().cert[0],
            renewed,
            "a broken renewal keeps the last good certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_directory_without_files_is_a_clear_error() {
        let err = from_dir(Path::new("/nonexistent-cert-dir")).expect_err("no files");
        assert!(err.to_string().contains("/nonexistent-cert-dir"), "{err}");
    }
}
