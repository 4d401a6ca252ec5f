//! ZeroMQ's ZAP handler (RFC 27): libzmq asks it about every connection to
//! the bound ROUTER before any message of that connection is delivered, and
//! we admit only addresses of the hostfile. Names in the hostfile are
//! resolved again (at most once a second) when an unknown address knocks, so
//! a peer whose name only resolves once it runs (a container) gets in, and
//! the list follows a name to its new address: a pod rescheduled under the
//! same name is admitted at its new address, and its old one, which the
//! network may hand to anything else, no longer is. (Connections already
//! admitted are not asked about again.)

use std::collections::HashSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slog::{info, warn};

use super::NetShared;
use crate::config::hostfile::HostEntry;

pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// The ZAP domain the ROUTER declares; NULL-mechanism connections consult
/// the handler only when their socket has one.
pub const DOMAIN: &str = "chimaera";

/// How names are resolved: the system's resolver, or a test's.
pub type Resolver = Box<dyn Fn(&str, u16) -> Vec<IpAddr> + Send>;

/// Addresses a hostfile admits, and how to refresh them.
pub struct Allowlist {
    hosts: Vec<(String, u16)>,
    ips: HashSet<IpAddr>,
    refreshed: Option<Instant>,
    resolve: Resolver,
}

fn system_resolver(host: &str, port: u16) -> Vec<IpAddr> {
    (host, port)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of IPv4 peers)
/// compare as the IPv4 address they are.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Allowlist {
    pub fn new(hosts: &[HostEntry], zmq_port: u16) -> Allowlist {
        Allowlist::with_resolver(hosts, zmq_port, Box::new(system_resolver))
    }

    pub fn with_resolver(hosts: &[HostEntry], zmq_port: u16, resolve: Resolver) -> Allowlist {
        let mut a = Allowlist {
            hosts: hosts
                .iter()
                .map(|h| (h.host.clone(), h.port.unwrap_or(zmq_port)))
                .collect(),
            ips: HashSet::new(),
            refreshed: None,
            resolve,
        };
        a.refresh();
        a
    }

    /// The hostfile's addresses as they resolve now, replacing the last
    /// answer: a name that moved is admitted only where it is.
    fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        let mut ips = HashSet::new();
        for (host, port) in &self.hosts {
            match host.parse::<IpAddr>() {
                Ok(ip) => {
                    ips.insert(normalize(ip));
                }
                Err(_) => ips.extend((self.resolve)(host, *port).into_iter().map(normalize)),
            }
        }
        self.ips = ips;
    }

    /// Whether `addr` (as ZAP gives it) belongs to a hostfile node.
    pub fn admits(&mut self, addr: &str) -> bool {
        let Ok(ip) = addr.parse::<IpAddr>().map(normalize) else {
            return false;
        };
        if self.ips.contains(&ip) {
            return true;
        }
        if self
            .refreshed
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.refresh();
        }
        self.ips.contains(&ip)
    }
}

/// The running handler; stops when dropped.
pub struct Zap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Zap {
    /// Binds the handler in `ctx` (before any socket that uses it binds).
    pub fn start(
        ctx: &zmq::Context,
        mut allow: Allowlist,
        shared: Arc<NetShared>,
        log: slog::Logger,
    ) -> Result<Zap, zmq::Error> {
        let sock = ctx.socket(zmq::REP)?;
        sock.set_linger(0)?;
        sock.bind(ZAP_ENDPOINT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chi-zap".into())
            .spawn(move || {
                let mut last_warn: Option<Instant> = None;
                let mut quiet = 0u64;
                while !flag.load(Ordering::Acquire) {
                    match sock.poll(zmq::POLLIN, 100) {
                        Ok(n) if n > 0 => {}
                        _ => continue,
                    }
                    let Ok(req) = sock.recv_multipart(0) else {
                        continue;
                    };
                    // version, request id, domain, address, routing id, mechanism, credentials...
                    let field =
                        |i: usize| req.get(i).map(|f| String::from_utf8_lossy(f).into_owned());
                    let raw = field(3).unwrap_or_default();
                    let addr = raw
                        .parse::<IpAddr>()
                        .map_or(raw, |ip| normalize(ip).to_string());
                    let ok = req.len() >= 6 && req[0] == b"1.0" && allow.admits(&addr);
                    let (code, text): (&[u8], &[u8]) = if ok {
                        (b"200", b"OK")
                    } else {
                        shared.counters.zap_denied.fetch_add(1, Ordering::Relaxed);
                        if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            let since = if quiet > 0 {
                                format!(" ({quiet} more refused since the last report)")
                            } else {
                                String::new()
                            };
                            warn!(
                                log,
                                "refused a connection from {}: not an address of the hostfile{}",
                                addr,
                                since
                            );
                            last_warn = Some(Instant::now());
                            quiet = 0;
                        } else {
                            quiet += 1;
                        }
                        (b"400", b"address not in the hostfile")
                    };
                    let request_id: &[u8] = req.get(1).map_or(&[], |v| v.as_slice());
                    let reply: [&[u8]; 6] = [b"1.0", request_id, code, text, b"", b""];
                    let _ = sock.send_multipart(reply, 0);
                }
                info!(log, "ZAP handler stopped");
            })
            .map_err(|_| zmq::Error::EMFILE)?;
        Ok(Zap {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Zap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_admits_hostfile_addresses_only() {
        let hosts = vec![
            HostEntry {
                host: "127.0.0.1".into(),
                port: Some(7000),
                line: 1,
            },
            HostEntry {
                host: "::1".into(),
                port: None,
                line: 2,
            },
            HostEntry {
                host: "localhost".into(),
                port: None,
                line: 3,
            },
        ];
        let mut a = Allowlist::new(&hosts, 5555);
        assert!(a.admits("127.0.0.1"));
        assert!(a.admits("::ffff:127.0.0.1"), "v4-mapped is the v4 address");
        assert!(a.admits("::1"));
        assert!(!a.admits("127.0.0.2"));
        assert!(!a.admits("10.1.2.3"));
        assert!(!a.admits("not an address"));
    }

    #[test]
    fn allowlist_follows_a_name_to_its_new_address() {
        use std::sync::{Arc, Mutex};
        let hosts = vec![
            HostEntry {
                host: "chimaera-0.chimaera-headless".into(),
                port: Some(5555),
                line: 1,
            },
            HostEntry {
                host: "chimaera-1.chimaera-headless".into(),
                port: Some(5555),
                line: 2,
            },
        ];
        // chimaera-1 runs at .11; chimaera-0 is not scheduled yet.
        let table: Arc<Mutex<Vec<(&str, IpAddr)>>> = Arc::new(Mutex::new(vec![(
            "chimaera-1.chimaera-headless",
            "10.0.0.11".parse().unwrap(),
        )]));
        let t = table.clone();
        let resolver: Resolver = Box::new(move |host, port| {
            assert_eq!(port, 5555);
            t.lock()
                .unwrap()
                .iter()
                .filter(|(h, _)| *h == host)
                .map(|(_, ip)| *ip)
                .collect()
        });
        let mut a = Allowlist::with_resolver(&hosts, 5555, resolver);
        assert!(a.admits("10.0.0.11"));
        assert!(!a.admits("10.0.0.10"), "chimaera-0 does not resolve yet");
        // chimaera-0 comes up at .10: it knocks again a second later (the
        // refresh is rate-limited) and is let in.
        table
            .lock()
            .unwrap()
            .push(("chimaera-0.chimaera-headless", "10.0.0.10".parse().unwrap()));
        a.refreshed = a.refreshed.map(|t| t - Duration::from_secs(2));
        assert!(a.admits("10.0.0.10"));
        // chimaera-1 is rescheduled: same name, new address. The new one is
        // admitted and the old one no longer is, as the next refresh shows.
        table.lock().unwrap()[0].1 = "10.0.0.42".parse().unwrap();
        a.refreshed = a.refreshed.map(|t| t - Duration::from_secs(2));
        assert!(a.admits("::ffff:10.0.0.42"));
        assert!(!a.admits("10.0.0.11"), "the old address was dropped");
        assert!(a.admits("10.0.0.10"), "the others stay");
        // Within a second of the last refresh nothing is looked up again.
        table.lock().unwrap().clear();
        assert!(a.admits("10.0.0.42"));
        assert!(!a.admits("10.9.9.9"));
        assert!(a.admits("10.0.0.42"), "no refresh inside the second");
    }
}
