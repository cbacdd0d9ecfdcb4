//! Listener addresses (`--listen`, `--admin-listen`): an IP address or a host name, and a port. A
//! name is resolved once at start-up and every address it resolves to is bound, on the same port
//! (`localhost` is 127.0.0.1 and, where it is configured, ::1).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use tokio::net::TcpListener;

/// Where a listener listens, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Why an address cannot be listened on.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "{given:?} is not HOST:PORT ({problem}); for example 0.0.0.0:8443, [::]:8443, localhost:8443"
    )]
    Syntax {
        given: String,
        problem: &'static str,
    },
    #[error("{flag} {addr}: the name does not resolve ({source})")]
    Unresolved {
        flag: &'static str,
        addr: ListenAddr,
        source: io::Error,
    },
    #[error("{flag} {addr}: the name resolves to no address")]
    NoAddress {
        flag: &'static str,
        addr: ListenAddr,
    },
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<ListenAddr, ListenError> {
        let syntax = |problem| ListenError::Syntax {
            given: s.to_owned(),
            problem,
        };
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| syntax("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| syntax("the port is not a number from 0 to 65535"))?;
        if host.contains(':') || host.starts_with('[') {
            return Err(syntax("an IPv6 address goes in brackets, as in [::1]:8443"));
        }
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !name_ok {
            return Err(syntax("the host is neither an IP address nor a host name"));
        }
        Ok(ListenAddr {
            host: Host::Name(host.to_owned()),
            port,
        })
    }
}

impl ListenAddr {
    /// The addresses to bind: the address itself, or every address the name resolves to (in the
    /// resolver's order, without repeats).
    pub async fn resolve(&self, flag: &'static str) -> Result<Vec<SocketAddr>, ListenError> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let found = tokio::net::lookup_host((name.as_str(), self.port))
            .await
            .map_err(|source| ListenError::Unresolved {
                flag,
                addr: self.clone(),
                source,
            })?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in found {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(ListenError::NoAddress {
                flag,
                addr: self.clone(),
            });
        }
        Ok(addrs)
    }

    /// Binds every address this resolves to. With port 0 the first picks a free port and the others
    /// take the same one. An address of a family the machine does not have (::1 without IPv6) is
    /// skipped with a warning as long as another one is bound.
    pub async fn bind(&self, flag: &'static str) -> Result<Vec<TcpListener>, ListenError> {
        let addrs = self.resolve(flag).await?;
        let mut listeners: Vec<TcpListener> = Vec::new();
        let mut port = self.port;
        let mut unavailable = None;
        for mut addr in addrs {
            addr.set_port(port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    if port == 0 {
                        port = listener.local_addr().map_or(0, |a| a.port());
                    }
                    listeners.push(listener);
                }
                Err(source) if source.kind() == io::ErrorKind::AddrNotAvailable => {
                    tracing::warn!(%addr, error = %source, "{flag} {self}: address not available here; skipped");
                    unavailable = Some(ListenError::Bind { flag, addr, source });
                }
                Err(source) => return Err(ListenError::Bind { flag, addr, source }),
            }
        }
        match (listeners.is_empty(), unavailable) {
            (true, Some(error)) => Err(error),
            _ => Ok(listeners),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_are_read_and_shown_back() {
        for ok in [
            "0.0.0.0:8443",
            "[::]:8443",
            "127.0.0.1:0",
            "[::1]:8080",
            "localhost:8443",
            "stage-guard.stage-guard.svc:443",
        ] {
            let addr: ListenAddr = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(addr.to_string(), ok);
        }
    }

    #[test]
    fn anything_else_says_what_is_wrong_in_one_line() {
        for (bad, problem) in [
            ("8443", "no port"),
            ("localhost", "no port"),
            ("localhost:http", "the port is not a number"),
            ("localhost:70000", "the port is not a number"),
            ("::1:8443", "in brackets"),
            (":8443", "neither an IP address nor a host name"),
            ("bad host:8443", "neither an IP address nor a host name"),
            ("a..b:8443", "neither an IP address nor a host name"),
        ] {
            let e = bad.parse::<ListenAddr>().expect_err(bad).to_string();
            assert!(e.contains(problem), "{bad}: {e}");
            assert!(e.contains("localhost:8443") && !e.contains('\n'), "{e}");
        }
    }

    #[tokio::test]
    async fn a_name_binds_every_address_it_resolves_to_on_one_port() {
        let addr: ListenAddr = "localhost:0".parse().unwrap();
        let resolved = addr.resolve("--listen").await.unwrap();
        assert!(
            resolved.iter().all(|a| a.ip().is_loopback()),
            "{resolved:?}"
        );
        let listeners = addr.bind("--listen").await.unwrap();
        assert!(!listeners.is_empty());
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(
            ports[0] != 0 && ports.iter().all(|p| *p == ports[0]),
            "{ports:?}"
        );
        // An IP address is bound as given.
        let ip: ListenAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(ip.bind("--listen").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error_naming_the_flag() {
        // `.invalid` never resolves (RFC 6761).
        let addr: ListenAddr = "no-such-host.invalid:8443".parse().unwrap();
        let e = addr.bind("--admin-listen").await.expect_err("resolved");
        let text = e.to_string();
        assert!(
            matches!(
                e,
                ListenError::Unresolved { .. } | ListenError::NoAddress { .. }
            ),
            "{text}"
        );
        assert!(
            text.starts_with("--admin-listen no-such-host.invalid:8443: the name"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}
