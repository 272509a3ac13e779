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
//! Which upstream goes through which proxy is decided by hyper-util's [`Matcher`], and the
//! `CONNECT` tunnel is hyper-util's [`Tunnel`]. Reading and checking the variables stays here:
//! the matcher takes a value it cannot use for "no proxy" and connects directly, so it is only
//! ever given values [`Proxy::parse`] accepted, written out canonically. Sending `http://`
//! requests to the proxy with absolute targets is the pool's (hyper-util has nothing for it).
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

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
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

    /// hyper-util's matcher of these proxies: [`Matcher::intercept`] names the proxy of an
    /// upstream URL, if it has one. (`ALL_PROXY` is already in `http` and `https`.)
    pub(crate) fn matcher(&self) -> Matcher {
        fn url(proxy: &Option<Proxy>) -> &str {
            proxy.as_ref().map_or("", |proxy| proxy.url.as_str())
        }
        Matcher::builder()
            .http(url(&self.http))
            .https(url(&self.https))
            .no(self.no_proxy.list.as_str())
            .build()
    }
}

/// An HTTP proxy: where it listens, and the credentials it is sent, if any.
#[derive(Clone)]
pub struct Proxy {
    /// `http://[user:password@]host:port`, user and password percent-encoded so that
    /// hyper-util's parse reads them back unchanged: what the matcher is given. Never shown.
    url: String,
    /// `host:port`, for messages.
    authority: Authority,
    /// Whether the URL had credentials (sent as `Proxy-Authorization: Basic`).
    credentials: bool,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Proxy");
        s.field("uri", &format_args!("http://{}", self.authority));
        if self.credentials {
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
    /// a URL without a scheme is taken as `http://`. User and password are percent-decoded
    /// (as UTF-8: a decoded byte sequence that is not UTF-8 is sent as U+FFFD).
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
        let url = match userinfo {
            None => format!("http://{authority}"),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let (user, password) = (encode_userinfo(user), encode_userinfo(password));
                format!("http://{user}:{password}@{authority}")
            }
        };
        // The matcher must read the same proxy: it would take anything else for no proxy.
        let read = Matcher::builder()
            .http(url.as_str())
            .build()
            .intercept(&Uri::from_static("http://upstream.invalid/"));
        match read {
            Some(via)
                if via.uri().authority() == Some(&authority)
                    && via.basic_auth().is_some() == userinfo.is_some() => {}
            _ => return Err(invalid("write http://host:port")),
        }
        Ok(Proxy {
            url,
            authority,
            credentials: userinfo.is_some(),
        })
    }
}

/// `text` (a user name or password, percent-encoded or not) with every character that could
/// end the userinfo or is not allowed in a URL percent-encoded; `%XX` escapes are kept, so
/// decoding gives what decoding `text` gives.
fn encode_userinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = byte == b'%'
            && bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if escape || byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
/// domain and its subdomains; a leading dot changes nothing, nor does a trailing dot on the
/// host), IP addresses and networks (`10.0.0.0/8`, `fd00::/8`, `[::1]`). Ports are not part
/// of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// The entries as hyper-util's matcher reads them (see [`NoProxy::parse`]).
    list: String,
}

impl NoProxy {
    /// A comma-separated list, as `NO_PROXY` holds it; entries that are neither addresses nor
    /// networks are domain names.
    pub fn parse(list: &str) -> NoProxy {
        // Written out for hyper-util's matcher, whose `*` matches names only, which reads
        // addresses without brackets, and whose `example.com` does not match `example.com.`.
        let mut entries: Vec<String> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                entries.extend(["*", "0.0.0.0/0", "::/0"].map(String::from));
                continue;
            }
            let unbracketed = entry
                .strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .filter(|(address, _)| address.parse::<IpAddr>().is_ok())
                .map(|(address, bits)| format!("{address}{bits}"));
            let entry = unbracketed.as_deref().unwrap_or(entry);
            let address = entry.split_once('/').map_or(entry, |(address, _)| address);
            if address.parse::<IpAddr>().is_ok() {
                entries.push(entry.to_string());
                continue;
            }
            let domain = entry.trim_start_matches('.').to_ascii_lowercase();
            if domain.is_empty() {
                continue;
            }
            if !domain.ends_with('.') {
                entries.push(format!("{domain}."));
            }
            entries.push(domain);
        }
        NoProxy {
            list: entries.join(","),
        }
    }

    /// Whether `host` (a name, or an address, IPv6 in brackets or not) is reached directly.
    pub fn matches(&self, host: &str) -> bool {
        let matcher = Matcher::builder()
            .all("http://proxy.invalid")
            .no(self.list.as_str())
            .build();
        let uri = if host.contains(':') && !host.starts_with('[') {
            format!("http://[{host}]/")
        } else {
            format!("http://{host}/")
        };
        uri.parse::<Uri>()
            .is_ok_and(|uri| matcher.intercept(&uri).is_none())
    }
}

/// What the TLS connector wraps: a TCP connection to the upstream, or, for an `https://`
/// upstream with a proxy, to the proxy with a `CONNECT` tunnel to the upstream opened on it
/// (hyper-util's [`Tunnel`]). `http://` upstreams with a proxy are dialled at the proxy by
/// their pool.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) tcp: HttpConnector,
    pub(crate) matcher: Arc<Matcher>,
    /// The TCP connect has this bound; the proxy's connection and its tunnel together, twice
    /// this.
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
        let via = if upstream.scheme() == Some(&Scheme::HTTPS) {
            self.matcher.intercept(&upstream)
        } else {
            None
        };
        let Some(via) = via else {
            let connecting = self.tcp.call(upstream);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let mut tunnel = Tunnel::new(via.uri().clone(), ToProxy(self.tcp.clone()));
        if let Some(authorization) = via.basic_auth() {
            tunnel = tunnel.with_auth(authorization.clone());
        }
        let tunnelling = tunnel.call(upstream);
        let limit = self.connect_timeout.saturating_mul(2);
        Box::pin(async move {
            match tokio::time::timeout(limit, tunnelling).await {
                Ok(Ok(io)) => Ok(io),
                Ok(Err(err)) => Err(TunnelError::from_hyper(err.into()).into()),
                Err(_) => Err(TunnelError::TimedOut.into()),
            }
        })
    }
}

/// The TCP connector under a tunnel. It marks its errors ([`Unreachable`]), so that a proxy
/// that cannot be reached is told apart from one that would not open the tunnel (hyper-util's
/// error type cannot be named).
#[derive(Clone)]
struct ToProxy(HttpConnector);

impl Service<Uri> for ToProxy {
    type Response = TokioIo<TcpStream>;
    type Error = Unreachable;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, Unreachable>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Unreachable>> {
        self.0.poll_ready(cx).map_err(|err| Unreachable(err.into()))
    }

    fn call(&mut self, proxy: Uri) -> Self::Future {
        let connecting = self.0.call(proxy);
        Box::pin(async move { connecting.await.map_err(|err| Unreachable(err.into())) })
    }
}

/// The proxy's TCP connection failed; shows the connector's error as its own.
#[derive(Debug)]
struct Unreachable(BoxError);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why a tunnel through the outbound proxy was not opened, with hyper-util's error as the
/// source. Names neither the proxy nor its credentials (hyper-util's errors do not either):
/// the message reaches API clients.
#[derive(Debug)]
enum TunnelError {
    /// The proxy's TCP connection failed.
    Unreachable(BoxError),
    /// The proxy answered the `CONNECT` with something else than a tunnel, or broke off.
    NotOpened(BoxError),
    TimedOut,
}

impl TunnelError {
    fn from_hyper(err: BoxError) -> TunnelError {
        if err
            .source()
            .is_some_and(|source| source.is::<Unreachable>())
        {
            TunnelError::Unreachable(err)
        } else {
            TunnelError::NotOpened(err)
        }
    }
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelError::Unreachable(_) => "the outbound proxy could not be reached",
            TunnelError::NotOpened(_) => "the outbound proxy did not open the tunnel",
            TunnelError::TimedOut => "the outbound proxy did not open the tunnel in time",
        })
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Past hyper-util's "failed to create underlying connection": the TCP error.
            TunnelError::Unreachable(err) => err.source(),
            TunnelError::NotOpened(err) => Some(err.as_ref()),
            TunnelError::TimedOut => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Proxies, ProxyError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Proxies::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    /// What the matcher makes of `proxy`: the URI it dials and the `Proxy-Authorization`.
    fn read(proxy: &Proxy) -> (String, Option<http::HeaderValue>) {
        let proxies = Proxies {
            http: Some(proxy.clone()),
            ..Proxies::default()
        };
        let via = proxies
            .matcher()
            .intercept(&Uri::from_static("http://upstream/"))
            .unwrap();
        (via.uri().to_string(), via.basic_auth().cloned())
    }

    #[test]
    fn basic_credentials_are_base64_of_user_colon_password() {
        // RFC 7617's example.
        let proxy = Proxy::parse("http://Aladdin:open%20sesame@proxy:3128").unwrap();
        let (uri, authorization) = read(&proxy);
        let authorization = authorization.unwrap();
        assert_eq!(authorization, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(authorization.is_sensitive());
        assert_eq!(uri, "http://proxy:3128/");
        // What would end the userinfo early, or is not allowed in a URL, still arrives.
        for (url, credentials) in [
            ("http://me:p@ss@proxy:1", "me:p@ss"),
            ("http://me:a/b?c#d@proxy:1", "me:a/b?c#d"),
            ("http://me:a:b@proxy:1", "me:a:b"),
            ("http://m%65:50%@proxy:1", "me:50%"),
            ("http://me:%zz é\"[]@proxy:1", "me:%zz é\"[]"),
            ("http://me@proxy:1", "me:"),
            ("http://!$&'()*+,;=~-._:x@proxy:1", "!$&'()*+,;=~-._:x"),
        ] {
            let proxy = Proxy::parse(url).unwrap();
            let (uri, authorization) = read(&proxy);
            assert_eq!(uri, "http://proxy:1/", "{url}");
            let expected = format!(
                "Basic {}",
                base64::prelude::BASE64_STANDARD.encode(credentials)
            );
            assert_eq!(authorization.unwrap(), expected.as_str(), "{url}");
        }
    }

    #[test]
    fn proxy_urls_default_to_http_and_port_80() {
        let uri = |url| read(&Proxy::parse(url).unwrap()).0;
        assert_eq!(uri("proxy.corp"), "http://proxy.corp:80/");
        assert_eq!(uri("proxy:8080/"), "http://proxy:8080/");
        assert_eq!(uri("HTTP://[::1]:3128"), "http://[::1]:3128/");
        assert!(
            read(&Proxy::parse("http://proxy:3128").unwrap())
                .1
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
        let matcher = format!("{:?}", proxies.matcher());
        assert!(!matcher.contains("hunter22"), "{matcher}");
    }

    /// The proxy `proxies` sends `url` to, as the connector and the pool ask for it.
    fn via(proxies: &Proxies, url: &'static str) -> Option<String> {
        proxies
            .matcher()
            .intercept(&Uri::from_static(url))
            .map(|via| via.uri().to_string())
    }

    #[test]
    fn the_environment_names_a_proxy_per_scheme() {
        let none = env(&[]).unwrap();
        assert!(none.is_empty());
        assert!(via(&none, "https://api.openai.com/").is_none());

        let proxies = env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("ALL_PROXY", "http://all:3"),
        ])
        .unwrap();
        assert_eq!(
            via(&proxies, "https://api.openai.com/v1").as_deref(),
            Some("http://secure:1/")
        );
        assert_eq!(
            via(&proxies, "http://api.openai.com/v1").as_deref(),
            Some("http://plain:2/")
        );

        // ALL_PROXY fills in; lower case wins; empty is unset.
        let proxies = env(&[
            ("ALL_PROXY", "http://all:3"),
            ("https_proxy", "http://lower:4"),
            ("HTTPS_PROXY", "http://upper:5"),
            ("http_proxy", " "),
        ])
        .unwrap();
        assert_eq!(
            via(&proxies, "https://x/").as_deref(),
            Some("http://lower:4/")
        );
        assert_eq!(via(&proxies, "http://x/").as_deref(), Some("http://all:3/"));
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
            "a.example.com.",
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
            "notexample.com.",
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
        for host in ["anything.at.all", "127.0.0.1", "[::1]", "fe80::1"] {
            assert!(NoProxy::parse("*").matches(host), "{host}");
        }
        assert!(!NoProxy::parse("").matches("localhost"));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));
        assert!(NoProxy::parse("10.1.2.3/8").matches("10.9.9.9"));
        assert!(!NoProxy::parse("10.0.0.0/33").matches("10.1.1.1"));
        let brackets = NoProxy::parse("[::1], [fd00::]/8");
        assert!(brackets.matches("[::1]") && brackets.matches("fd00::7"));
        assert!(!brackets.matches("[::2]"));

        let proxies = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "openai.com")]).unwrap();
        assert!(via(&proxies, "https://api.openai.com/").is_none());
        assert!(via(&proxies, "https://api.openai.com./").is_none());
        assert!(via(&proxies, "https://api.anthropic.com/").is_some());
    }

    /// Connects to `https://upstream.invalid/` through an HTTPS proxy at `proxy`; the error's
    /// chain.
    async fn tunnel_error(proxy: &str) -> String {
        let proxies = Proxies {
            https: Some(Proxy::parse(&format!("http://me:hunter22@{proxy}")).unwrap()),
            ..Proxies::default()
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        let mut connector = Connector {
            tcp,
            matcher: Arc::new(proxies.matcher()),
            connect_timeout: Duration::from_millis(100),
        };
        let Err(err) = connector
            .call(Uri::from_static("https://upstream.invalid/"))
            .await
        else {
            panic!("a tunnel through {proxy}");
        };
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        assert!(
            !text.contains("hunter22") && !text.contains(proxy),
            "{text}"
        );
        text
    }

    #[tokio::test]
    async fn tunnel_errors_say_what_failed_without_the_proxy_or_its_credentials() {
        // Nothing listens.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = tunnel_error(&closed).await;
        assert!(
            err.starts_with("the outbound proxy could not be reached: tcp connect error"),
            "{err}"
        );

        // A proxy that accepts and says nothing: the tunnel has twice the connect timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let err = tunnel_error(&address).await;
        assert_eq!(err, "the outbound proxy did not open the tunnel in time");

        // A proxy that answers something else than 200.
        let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = refusing.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = refusing.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await;
            let _ = socket.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        });
        let err = tunnel_error(&address).await;
        assert_eq!(
            err,
            "the outbound proxy did not open the tunnel: tunnel error: unsuccessful"
        );
        drop(silent);
    }
}
