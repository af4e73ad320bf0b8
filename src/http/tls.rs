//! HTTPS for /metrics: the certificate (self-signed, made at start, as controller-runtime
//! does; or `tls.crt`/`tls.key` from a directory, e.g. a mounted cert-manager Secret) and
//! a listener that does the TLS handshakes off the accept loop, each bounded in time, a
//! few dozen at once, so a slow or silent client holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; the accept loop waits beyond.
const CONCURRENT_HANDSHAKES: usize = 64;

/// Server TLS settings from a certificate chain and its key (HTTP/1.1 only).
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A fresh self-signed certificate for these names, only in memory.
pub fn self_signed(names: &[String]) -> io::Result<Arc<ServerConfig>> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec()).map_err(io::Error::other)?;
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    server_config(vec![generated.cert.der().clone()], key.into())
}

/// `tls.crt` (the chain, PEM) and `tls.key` (PEM) in `dir`: the layout of a
/// kubernetes.io/tls Secret mounted as a volume.
pub fn from_dir(dir: &Path) -> io::Result<Arc<ServerConfig>> {
    let pem = |e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", dir.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).map_err(pem)?;
    server_config(chain, key)
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

    #[test]
    fn a_certificate_directory_without_files_is_a_clear_error() {
        let err = from_dir(Path::new("/nonexistent-cert-dir")).expect_err("no files");
        assert!(err.to_string().contains("/nonexistent-cert-dir"), "{err}");
    }
}
