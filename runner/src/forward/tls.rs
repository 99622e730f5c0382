//! TLS to a local dev server that speaks HTTPS.
//!
//! The certificate is the developer's own (self-signed, from `basic-ssl`,
//! mkcert or `next dev --experimental-https`), so it is not verified: the
//! connection is already known to reach the approved listener on loopback
//! (the verified dial happens before the ClientHello is sent), and TLS is
//! spoken only because the server insists on it. SNI is `localhost`, as a
//! browser on the developer's machine would send.

use std::io;

use tokio::net::TcpStream;

/// The name sent as SNI.
const SERVER_NAME: &str = "localhost";

/// How long a probe waits for a TLS answer: a TLS server on loopback
/// answers a ClientHello in milliseconds, while a plain server may read it
/// as the start of a request and wait for the rest.
pub(crate) const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(target_os = "linux")]
pub(crate) type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;
#[cfg(not(target_os = "linux"))]
pub(crate) type TlsStream = tokio_native_tls::TlsStream<TcpStream>;

/// Whether `byte` can start a TLS record (change_cipher_spec, alert,
/// handshake, application_data): a TLS server answering plain HTTP with an
/// alert or a handshake.
pub(crate) fn is_record_start(byte: u8) -> bool {
    (0x14..=0x17).contains(&byte)
}

/// Whether an I/O failure, anywhere in `err`'s sources, is the peer
/// resetting the connection (what Node's TLS server does to plain HTTP).
pub(crate) fn is_reset(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Performs the TLS handshake on an already verified connection.
pub(crate) async fn handshake(tcp: TcpStream) -> io::Result<TlsStream> {
    imp::handshake(tcp).await
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::sync::{Arc, OnceLock};

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio::net::TcpStream;

    /// Accepts any certificate (see the module's comment), but still checks
    /// that the server holds its key, as TLS requires.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    fn connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
        static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        if let Some(config) = CONFIG.get() {
            return Ok(config.clone().into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        // HTTP/1.1 only: the forwarder speaks it, and a server offering h2
        // (Vite's HTTPS server does) falls back to it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(CONFIG.get_or_init(|| Arc::new(config)).clone().into())
    }

    pub(super) async fn handshake(tcp: TcpStream) -> io::Result<super::TlsStream> {
        let name = ServerName::try_from(super::SERVER_NAME).expect("a valid DNS name");
        connector()
            .map_err(io::Error::other)?
            .connect(name, tcp)
            .await
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use tokio::net::TcpStream;

    pub(super) async fn handshake(tcp: TcpStream) -> io::Result<super::TlsStream> {
        // No ALPN offered: the server then speaks HTTP/1.1.
        let connector = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()
            .map_err(io::Error::other)?;
        tokio_native_tls::TlsConnector::from(connector)
            .connect(super::SERVER_NAME, tcp)
            .await
            .map_err(io::Error::other)
    }
}
