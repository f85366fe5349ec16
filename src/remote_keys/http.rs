//! The HTTP GET behind remote keys: the [`JwksHttpClient`] trait a user may
//! implement with their own client, and the default one (hyper + rustls).

use std::{future::Future, pin::Pin, time::Duration};

use http::{Request, Response, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A boxed, sendable future (what [`JwksHttpClient::get`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any error an HTTP client reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One GET of a JWKS or discovery document.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JwksRequest<'a> {
    /// The absolute `https://` (or loopback `http://`) URL.
    pub uri: &'a Uri,
    /// The whole exchange (connect, TLS, request, body) must finish within
    /// this; the caller also enforces it around the returned future.
    pub timeout: Duration,
    /// A body longer than this must be refused (the caller checks it again).
    pub max_body_bytes: usize,
}

/// An HTTP client that fetches JWKS and discovery documents.
///
/// The default is a hyper client with rustls and the system's root
/// certificates; implement this to use your own (a proxy, custom roots,
/// mutual TLS, redirects). Answer every status as `Ok`: the caller judges it.
///
/// ```
/// use tower_jwt_auth::remote_keys::{BoxError, BoxFuture, JwksHttpClient, JwksRequest, RemoteKeys};
///
/// struct Reqwest(reqwest::Client);
///
/// impl JwksHttpClient for Reqwest {
///     fn get<'a>(&'a self, request: JwksRequest<'a>) -> BoxFuture<'a, Result<http::Response<Vec<u8>>, BoxError>> {
///         Box::pin(async move {
///             let answer = self.0.get(request.uri.to_string()).timeout(request.timeout).send().await?;
///             let mut response = http::Response::builder().status(answer.status().as_u16());
///             for (name, value) in answer.headers() {
///                 response = response.header(name.as_str(), value.as_bytes());
///             }
///             let body = answer.bytes().await?;
///             if body.len() > request.max_body_bytes {
///                 return Err("body too large".into());
///             }
///             Ok(response.body(body.to_vec())?)
///         })
///     }
/// }
///
/// # async fn run() -> Result<(), tower_jwt_auth::remote_keys::RemoteKeysError> {
/// let keys = RemoteKeys::jwks_url("https://login.example.com/jwks.json")
///     .http_client(Reqwest(reqwest::Client::new()))
///     .build()?;
/// # Ok(()) }
/// ```
pub trait JwksHttpClient: Send + Sync + 'static {
    /// GETs `request.uri`: the status, headers and whole body, or why not.
    fn get<'a>(&'a self, request: JwksRequest<'a>) -> BoxFuture<'a, Result<Response<Vec<u8>>, BoxError>>;
}

/// The default client: hyper's pooled HTTP/1.1 client over rustls with the
/// operating system's root certificates. It follows no redirect.
pub(crate) struct HyperClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<hyper::body::Bytes>>,
}

#[cfg(not(any(feature = "aws-lc-rs", feature = "rust-crypto")))]
compile_error!("the `remote-keys` feature needs a crypto backend: enable `aws-lc-rs` or `rust-crypto`");

impl HyperClient {
    /// Builds the client. Without a usable system root certificate it fails
    /// when `need_roots`, else it is built with none (https then fails).
    pub(crate) fn new(connect_timeout: Duration, need_roots: bool) -> std::io::Result<Self> {
        // One provider chosen explicitly: with both backends enabled rustls
        // cannot pick a process default by itself.
        #[cfg(feature = "aws-lc-rs")]
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        #[cfg(all(not(feature = "aws-lc-rs"), feature = "rust-crypto"))]
        let provider = rustls::crypto::ring::default_provider();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let provider = std::sync::Arc::new(provider);
        let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(tls) => tls,
            Err(e) if need_roots => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "no TLS root certificates: https JWKS URLs will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(std::io::Error::other)?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let https = tls.https_or_http().enable_http1().wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(https) })
    }
}

impl JwksHttpClient for HyperClient {
    fn get<'a>(&'a self, request: JwksRequest<'a>) -> BoxFuture<'a, Result<Response<Vec<u8>>, BoxError>> {
        Box::pin(async move {
            let get = Request::get(request.uri.clone())
                .header(header::ACCEPT, "application/jwk-set+json, application/json")
                .header(header::USER_AGENT, concat!("tower-jwt-auth/", env!("CARGO_PKG_VERSION")))
                .body(Empty::new())?;
            // The caller bounds the whole exchange by `request.timeout`.
            let (parts, body) = self.client.request(get).await?.into_parts();
            let body = Limited::new(body, request.max_body_bytes).collect().await?.to_bytes();
            Ok(Response::from_parts(parts, body.to_vec()))
        })
    }
}
