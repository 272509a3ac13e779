//! Outbound proxies: upstream connections through an HTTP proxy, configured as curl and most
//! HTTP clients read it from the environment.
//!
//! - `https://` upstreams go through a `CONNECT` tunnel to the proxy (`HTTPS_PROXY`), and TLS
//!   (with ALPN, so HTTP/2 still works) runs inside it: the proxy sees the host and port only.
//! - `http://` upstreams are sent to the proxy (`HTTP_PROXY`) with absolute request targets,
//!   as HTTP/1.1 proxies expect (many refuse `CONNECT` to ports other than 443).
//! - `ALL_PROXY` serves both when the specific variable is unset; `NO_PROXY` lists the hosts
//!   reached directly. Lower-case names win over upper-case ones; empty values count as unset.
//!
//! Credentials in a proxy URL (`http://user:pass@proxy:3128`) are sent as
//! `Proxy-Authorization: Basic` and never shown: not in `Debug`, errors or logs.
//!
//! ```
//! use sllmp_providers::{HttpSettings, Proxies, Proxy, NoProxy};
//!
//! let settings = HttpSettings {
//!     proxies: Proxies {
//!         https: Some(Proxy::parse("http://user:secret@proxy.internal:3128")?),
//!         http: None,
//!         no_proxy: NoProxy::parse("localhost, .internal, 10.0.0.0/8"),
//!     },
//!     ..HttpSettings::default()
//! };
//! assert!(!format!("{settings:?}").contains("secret"));
//! # Ok::<(), sllmp_providers::ProxyError>(())
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::client::BoxError;

/// Which upstreams go through which proxy ([`HttpSettings::proxies`](crate::HttpSettings)).
/// The default is none: every upstream is reached directly.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// The proxy of `http://` upstreams.
    pub http: Option<Proxy>,
    /// The proxy of `https://` upstreams (a `CONNECT` tunnel).
    pub https: Option<Proxy>,
    /// Hosts reached directly whatever the two above say.
    pub no_proxy: NoProxy,
}

impl Proxies {
    /// The proxies the environment names: `https_proxy`/`HTTPS_PROXY`,
    /// `http_proxy`/`HTTP_PROXY`, `all_proxy`/`ALL_PROXY` (for either scheme when its own
    /// variable is unset) and `no_proxy`/`NO_PROXY`.
    ///
    /// # Errors
    ///
    /// When a variable holds a URL that is not an `http://` proxy; the error names the
    /// variable.
    pub fn from_env() -> Result<Proxies, ProxyError> {
        Proxies::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Proxies, ProxyError> {
        // Lower case first, as curl reads them; an empty value is unset.
        let var = |name: &str| {
            [name.to_ascii_lowercase(), name.to_string()]
                .into_iter()
                .find_map(|key| {
                    lookup(&key)
                        .filter(|value| !value.trim().is_empty())
                        .map(|value| (key, value))
                })
        };
        let proxy = |name: &str| -> Result<Option<Proxy>, ProxyError> {
            match var(name).or_else(|| var("ALL_PROXY")) {
                None => Ok(None),
                Some((key, value)) => Proxy::parse(&value).map(Some).map_err(|err| ProxyError {
                    variable: Some(key),
                    ..err
                }),
            }
        };
        Ok(Proxies {
            http: proxy("HTTP_PROXY")?,
            https: proxy("HTTPS_PROXY")?,
            no_proxy: var("NO_PROXY")
                .map(|(_, value)| NoProxy::parse(&value))
                .unwrap_or_default(),
        })
    }

    /// Whether any upstream goes through a proxy.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy of an upstream at `scheme://host`, if it has one.
    pub(crate) fn for_origin(&self, scheme: &Scheme, host: &str) -> Option<&Proxy> {
        let proxy = if *scheme == Scheme::HTTPS {
            self.https.as_ref()
        } else if *scheme == Scheme::HTTP {
            self.http.as_ref()
        } else {
            None
        }?;
        (!self.no_proxy.matches(host)).then_some(proxy)
    }
}

/// An HTTP proxy: where it listens, and the credentials it is sent, if any.
#[derive(Clone)]
pub struct Proxy {
    /// `http://host:port/`, what is dialled.
    uri: Uri,
    /// `host:port`, for messages.
    authority: Authority,
    /// `Basic …` of the URL's user and password, marked sensitive.
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Proxy");
        s.field("uri", &format_args!("http://{}", self.authority));
        if self.authorization.is_some() {
            s.field("credentials", &"[REDACTED]");
        }
        s.finish()
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl Proxy {
    /// A proxy from its URL: `http://[user:password@]host[:port]` (port 80 when left out);
    /// a URL without a scheme is taken as `http://`. User and password are percent-decoded.
    ///
    /// # Errors
    ///
    /// Another scheme (`https://`, `socks5://`: not supported), no host, or a path.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), url),
        };
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        // What may be shown of the URL: never its credentials.
        let shown = format!("{scheme}://{hostport}");
        let invalid = |why: &str| ProxyError {
            variable: None,
            message: format!("`{shown}` is not a usable proxy: {why}"),
        };
        if scheme != "http" {
            return Err(invalid(
                "only http:// proxies are supported (HTTPS upstreams still get TLS end to end, through a CONNECT tunnel)",
            ));
        }
        let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
        if hostport.contains(['/', '?', '#']) {
            return Err(invalid("a proxy URL has no path; write http://host:port"));
        }
        let authority: Authority = hostport
            .parse()
            .map_err(|_| invalid("write http://host:port"))?;
        if authority.host().is_empty() {
            return Err(invalid("it names no host"));
        }
        let has_port = authority.as_str().len() > authority.host().len();
        let authority: Authority = match authority.port_u16() {
            Some(_) => authority,
            None if has_port => return Err(invalid("its port is not a number up to 65535")),
            None => format!("{}:80", authority.host())
                .parse()
                .map_err(|_| invalid("write http://host:port"))?,
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| invalid("write http://host:port"))?;
        let authorization = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let credentials = [
                    percent_decode(user),
                    b":".to_vec(),
                    percent_decode(password),
                ]
                .concat();
                let mut value = HeaderValue::try_from(format!("Basic {}", base64(&credentials)))
                    .map_err(|_| invalid("its credentials cannot be sent"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Proxy {
            uri,
            authority,
            authorization,
        })
    }

    /// The `Proxy-Authorization` value sent to it, if the URL had credentials.
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// `http://host:port/`.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A proxy URL that cannot be used; says which variable held it, never its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    variable: Option<String>,
    message: String,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variable {
            Some(variable) => write!(f, "{variable}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The hosts reached directly (`NO_PROXY`): `*` (every host), domain names (matching the
/// domain and its subdomains; a leading dot changes nothing), IP addresses and networks
/// (`10.0.0.0/8`, `fd00::/8`). Ports are not part of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    domains: Vec<String>,
    networks: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// A comma-separated list, as `NO_PROXY` holds it; entries that are neither addresses nor
    /// networks are domain names.
    pub fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
            } else if let Some(network) = parse_network(entry) {
                no_proxy.networks.push(network);
            } else {
                let domain = entry.trim_start_matches('.').to_ascii_lowercase();
                if !domain.is_empty() {
                    no_proxy.domains.push(domain);
                }
            }
        }
        no_proxy
    }

    /// Whether `host` (a name, or an address, IPv6 in brackets or not) is reached directly.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(address) = bare.parse::<IpAddr>() {
            return self
                .networks
                .iter()
                .any(|&(network, bits)| in_network(address, network, bits));
        }
        let host = host.trim_end_matches('.');
        self.domains.iter().any(|domain| {
            host.len() >= domain.len()
                && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                && (host.len() == domain.len()
                    || host.as_bytes()[host.len() - domain.len() - 1] == b'.')
        })
    }
}

/// `10.1.2.3`, `10.0.0.0/8`, `::1`, `fd00::/8`.
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (address, bits) = match entry.split_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let address: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((address, bits))
}

fn in_network(address: IpAddr, network: IpAddr, bits: u8) -> bool {
    let prefix = |a: u128, b: u128, width: u32| {
        let shift = width - u32::from(bits);
        shift >= width || (a >> shift) == (b >> shift)
    };
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix(u32::from(a).into(), u32::from(n).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix(u128::from(a), u128::from(n), 128),
        _ => false,
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for `Basic` credentials.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the TLS connector wraps: a TCP connection to the upstream, or, for an `https://`
/// upstream with a proxy, to the proxy with a `CONNECT` tunnel to the upstream opened on it.
/// (`http://` upstreams with a proxy are dialled at the proxy by their pool.)
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) tcp: HttpConnector,
    pub(crate) proxies: Arc<Proxies>,
    /// Bounds the tunnel's handshake (the TCP connect has its own bound).
    pub(crate) connect_timeout: Duration,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, upstream: Uri) -> Connecting {
        let proxy = match (upstream.scheme(), upstream.host()) {
            (Some(scheme), Some(host)) if *scheme == Scheme::HTTPS => {
                self.proxies.for_origin(scheme, host).cloned()
            }
            _ => None,
        };
        let Some(proxy) = proxy else {
            let connecting = self.tcp.call(upstream);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let connecting = self.tcp.call(proxy.uri().clone());
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let mut io = connecting
                .await
                .map_err(|err| TunnelError::Connect(err.into()))?;
            let target = format!(
                "{}:{}",
                upstream.host().unwrap_or_default(),
                upstream.port_u16().unwrap_or(443)
            );
            tokio::time::timeout(timeout, open_tunnel(io.inner_mut(), &target, &proxy))
                .await
                .map_err(|_| TunnelError::TimedOut)??;
            Ok(io)
        })
    }
}

/// Asks the proxy on `stream` for a tunnel to `target` (`host:port`) and reads its answer.
async fn open_tunnel(stream: &mut TcpStream, target: &str, proxy: &Proxy) -> Result<(), BoxError> {
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(authorization) = proxy.authorization() {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(authorization.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await?;
    // The answer's head; nothing follows it until the TLS handshake starts.
    const MAX_HEAD: usize = 8 * 1024;
    let mut answer = Vec::with_capacity(512);
    let end = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if answer.len() > MAX_HEAD {
            return Err(TunnelError::Malformed.into());
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await? {
            0 => return Err(TunnelError::Closed.into()),
            n => answer.extend_from_slice(&chunk[..n]),
        }
    };
    let status_line = answer
        .split(|&b| b == b'\r')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .ok_or(TunnelError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(TunnelError::Malformed.into());
    };
    let code: u16 = code.parse().map_err(|_| TunnelError::Malformed)?;
    if !version.starts_with("HTTP/1.") {
        return Err(TunnelError::Malformed.into());
    }
    if !(200..300).contains(&code) {
        let reason = parts.next().unwrap_or("").chars().take(100).collect();
        return Err(TunnelError::Refused(code, reason).into());
    }
    if end != answer.len() {
        return Err(TunnelError::Malformed.into());
    }
    Ok(())
}

/// Why a tunnel through the outbound proxy was not opened. Names neither the proxy nor its
/// credentials: the message reaches API clients.
#[derive(Debug)]
enum TunnelError {
    Connect(BoxError),
    Refused(u16, String),
    Closed,
    Malformed,
    TimedOut,
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Connect(_) => f.write_str("the outbound proxy could not be reached"),
            TunnelError::Refused(code, reason) => {
                write!(f, "the outbound proxy refused the tunnel: {code} {reason}")
            }
            TunnelError::Closed => f.write_str("the outbound proxy closed the connection"),
            TunnelError::Malformed => f.write_str("the outbound proxy's answer is not HTTP/1.1"),
            TunnelError::TimedOut => {
                f.write_str("the outbound proxy did not open the tunnel in time")
            }
        }
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Connect(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Proxies, ProxyError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Proxies::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn basic_credentials_are_base64_of_user_colon_password() {
        // RFC 7617's example.
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let proxy = Proxy::parse("http://Aladdin:open%20sesame@proxy:3128").unwrap();
        assert_eq!(
            proxy.authorization().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(proxy.authorization().unwrap().is_sensitive());
        assert_eq!(proxy.uri(), "http://proxy:3128/");
    }

    #[test]
    fn proxy_urls_default_to_http_and_port_80() {
        assert_eq!(
            Proxy::parse("proxy.corp").unwrap().uri(),
            "http://proxy.corp:80/"
        );
        assert_eq!(
            Proxy::parse("proxy:8080/").unwrap().uri(),
            "http://proxy:8080/"
        );
        assert_eq!(
            Proxy::parse("HTTP://[::1]:3128").unwrap().uri(),
            "http://[::1]:3128/"
        );
        assert!(
            Proxy::parse("http://proxy:3128")
                .unwrap()
                .authorization()
                .is_none()
        );
    }

    #[test]
    fn unusable_proxy_urls_are_refused_without_showing_credentials() {
        for (url, why) in [
            ("https://u:hunter22@proxy:443", "only http:// proxies"),
            ("socks5://proxy:1080", "only http:// proxies"),
            ("http://proxy:3128/path", "has no path"),
            ("http://:3128", "it names no host"),
            ("http://u:hunter22@proxy:99999", "its port is not a number"),
        ] {
            let err = Proxy::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("hunter22"), "{err}");
        }
        let err = env(&[("HTTPS_PROXY", "socks5://u:hunter22@proxy:1080")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTPS_PROXY: `socks5://proxy:1080` is not a usable proxy: only http:// proxies are supported (HTTPS upstreams still get TLS end to end, through a CONNECT tunnel)"
        );
    }

    #[test]
    fn debug_shows_the_proxy_but_not_its_credentials() {
        let proxies = env(&[("HTTPS_PROXY", "http://user:hunter22@proxy:3128")]).unwrap();
        let debug = format!("{proxies:?}");
        assert!(debug.contains("http://proxy:3128"), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
        assert!(
            !debug.contains("hunter22") && !debug.contains("user"),
            "{debug}"
        );
    }

    #[test]
    fn the_environment_names_a_proxy_per_scheme() {
        let https = Scheme::HTTPS;
        let http = Scheme::HTTP;
        let none = env(&[]).unwrap();
        assert!(none.is_empty());
        assert!(none.for_origin(&https, "api.openai.com").is_none());

        let proxies = env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("ALL_PROXY", "http://all:3"),
        ])
        .unwrap();
        let via = |scheme, host| proxies.for_origin(scheme, host).map(ToString::to_string);
        assert_eq!(
            via(&https, "api.openai.com").as_deref(),
            Some("http://secure:1")
        );
        assert_eq!(
            via(&http, "api.openai.com").as_deref(),
            Some("http://plain:2")
        );

        // ALL_PROXY fills in; lower case wins; empty is unset.
        let proxies = env(&[
            ("ALL_PROXY", "http://all:3"),
            ("https_proxy", "http://lower:4"),
            ("HTTPS_PROXY", "http://upper:5"),
            ("http_proxy", " "),
        ])
        .unwrap();
        let via = |scheme, host| proxies.for_origin(scheme, host).map(ToString::to_string);
        assert_eq!(via(&https, "x").as_deref(), Some("http://lower:4"));
        assert_eq!(via(&http, "x").as_deref(), Some("http://all:3"));
    }

    #[test]
    fn no_proxy_matches_domains_subdomains_addresses_and_networks() {
        let no_proxy = NoProxy::parse(
            " localhost, .internal.corp,Example.COM , 10.0.0.0/8, 192.168.1.7, fd00::/8, ::1 ,,",
        );
        for host in [
            "localhost",
            "api.internal.corp",
            "internal.corp",
            "example.com",
            "a.b.EXAMPLE.com",
            "example.com.",
            "10.200.3.4",
            "192.168.1.7",
            "[fd12::1]",
            "::1",
            "[::1]",
        ] {
            assert!(no_proxy.matches(host), "{host} should be direct");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "localhost.evil",
            "11.0.0.1",
            "192.168.1.8",
            "[fe80::1]",
            "corp",
        ] {
            assert!(
                !no_proxy.matches(host),
                "{host} should go through the proxy"
            );
        }
        assert!(NoProxy::parse("*").matches("anything.at.all"));
        assert!(!NoProxy::parse("").matches("localhost"));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));

        let proxies = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "openai.com")]).unwrap();
        assert!(
            proxies
                .for_origin(&Scheme::HTTPS, "api.openai.com")
                .is_none()
        );
        assert!(
            proxies
                .for_origin(&Scheme::HTTPS, "api.anthropic.com")
                .is_some()
        );
    }
}
