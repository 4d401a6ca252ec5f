//! Cluster membership: which line of the hostfile is this node.
//!
//! The line's index among the hostfile's node lines is the node id. A node
//! finds its line by its own addresses and port ([`identify`], pure, tested
//! without DNS or interfaces), or is told it with `network.node_id`. The I/O
//! it needs (this machine's addresses and name, the hostfile's names
//! resolved) is gathered separately by [`LocalAddrs::gather`] and
//! [`resolve`].

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};

use crate::config::hostfile::HostEntry;

/// A node's index in the hostfile (0 for a single node).
pub type NodeId = u32;

/// What this machine answers to: its interface addresses and its names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    /// Interface addresses, IPv4 and IPv6. Loopback addresses (127.0.0.0/8,
    /// ::1) are always ours, listed or not.
    pub addrs: Vec<IpAddr>,
    /// Host names (`gethostname`), compared without case.
    pub names: Vec<String>,
}

impl LocalAddrs {
    /// This machine's addresses (`getifaddrs`, plus loopback) and host name.
    /// An error reading the interfaces leaves loopback and the name: enough
    /// for a one-host cluster, and [`identify`] names what it looked for.
    pub fn gather() -> LocalAddrs {
        let mut addrs = crate::sys::interface_addrs().unwrap_or_default();
        addrs.push(IpAddr::from([127, 0, 0, 1]));
        addrs.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        let mut seen = Vec::with_capacity(addrs.len());
        addrs.retain(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        });
        LocalAddrs {
            addrs,
            names: crate::sys::hostname().into_iter().collect(),
        }
    }

    fn has_addr(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.addrs.iter().any(|a| a.to_canonical() == ip)
    }

    fn has_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.names
            .iter()
            .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
    }
}

/// Why this node could not tell which hostfile line it is. [`key`] says
/// which setting to fix.
///
/// [`key`]: IdentityError::key
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// An explicit id other than 0 without a hostfile.
    NoHostfile { id: NodeId },
    /// An explicit id past the hostfile's last node.
    OutOfRange { id: NodeId, hosts: usize },
    /// An explicit id whose line gives a port other than ours.
    PortMismatch {
        id: NodeId,
        entry: HostEntry,
        zmq_port: u16,
    },
    /// No line has one of our addresses or names with our port.
    NotListed {
        local: LocalAddrs,
        port: u16,
        /// Names of lines with our port that did not resolve to any address.
        unresolved: Vec<String>,
    },
    /// Several lines have one of our addresses or names with our port.
    Ambiguous { port: u16, entries: Vec<HostEntry> },
}

impl IdentityError {
    /// The configuration key the message is about.
    pub fn key(&self) -> &'static str {
        match self {
            IdentityError::NotListed { .. } | IdentityError::Ambiguous { .. } => "network.hostfile",
            _ => "network.node_id",
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NoHostfile { id } => write!(
                f,
                "network.node_id is {id}, but without network.hostfile this is a single node, node 0; set a hostfile or node_id auto"
            ),
            IdentityError::OutOfRange { id, hosts } => write!(
                f,
                "network.node_id is {id}, but the hostfile lists {hosts} node(s), ids 0 to {}",
                hosts - 1
            ),
            IdentityError::PortMismatch {
                id,
                entry,
                zmq_port,
            } => write!(
                f,
                "network.node_id is {id}: line {} ({entry}) gives port {}, but this node's network.zmq_port is {zmq_port}",
                entry.line,
                entry.port.unwrap_or(*zmq_port)
            ),
            IdentityError::NotListed {
                local,
                port,
                unresolved,
            } => {
                let ours: Vec<String> = local
                    .addrs
                    .iter()
                    .map(IpAddr::to_string)
                    .chain(local.names.iter().cloned())
                    .collect();
                write!(
                    f,
                    "this node is not in the hostfile: none of its addresses [{}] with port {port} appears; add it or set network.node_id",
                    ours.join(", ")
                )?;
                if !unresolved.is_empty() {
                    write!(
                        f,
                        " (names that did not resolve: {})",
                        unresolved.join(", ")
                    )?;
                }
                Ok(())
            }
            IdentityError::Ambiguous { port, entries } => {
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| format!("line {} ({e})", e.line))
                    .collect();
                write!(
                    f,
                    "this node is ambiguous: {} each name it with port {port}; list it once, give the lines distinct ports, or set network.node_id",
                    lines.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// The port a hostfile line's node listens on.
fn entry_port(entry: &HostEntry, zmq_port: u16) -> u16 {
    entry.port.unwrap_or(zmq_port)
}

/// Which node this is. `resolved[i]` holds the addresses the name of
/// `hosts[i]` resolves to (may be empty: address literals need none, and
/// lines on another port are never looked at); `explicit` is
/// `network.node_id` unless it is `auto`.
///
/// No hostfile: a single node, id 0. An explicit id must index a line
/// whose port (if it gives one) is ours. Otherwise the one line whose host
/// is one of our addresses or names (or resolves to one of our addresses)
/// and whose port (its own, else `zmq_port`) is ours.
pub fn identify(
    hosts: &[HostEntry],
    resolved: &[Vec<IpAddr>],
    zmq_port: u16,
    explicit: Option<NodeId>,
    local: &LocalAddrs,
) -> Result<NodeId, IdentityError> {
    if hosts.is_empty() {
        return match explicit {
            None | Some(0) => Ok(0),
            Some(id) => Err(IdentityError::NoHostfile { id }),
        };
    }
    if let Some(id) = explicit {
        let entry = hosts.get(id as usize).ok_or(IdentityError::OutOfRange {
            id,
            hosts: hosts.len(),
        })?;
        if entry_port(entry, zmq_port) != zmq_port {
            return Err(IdentityError::PortMismatch {
                id,
                entry: entry.clone(),
                zmq_port,
            });
        }
        return Ok(id);
    }
    let no_addrs = Vec::new();
    let mut matches = Vec::new();
    let mut unresolved = Vec::new();
    for (i, entry) in hosts.iter().enumerate() {
        if entry_port(entry, zmq_port) != zmq_port {
            continue;
        }
        let ours = match entry.host.parse::<IpAddr>() {
            Ok(ip) => local.has_addr(ip),
            Err(_) => {
                let addrs = resolved.get(i).unwrap_or(&no_addrs);
                if addrs.is_empty() && !unresolved.contains(&entry.host) {
                    unresolved.push(entry.host.clone());
                }
                local.has_name(&entry.host) || addrs.iter().any(|a| local.has_addr(*a))
            }
        };
        if ours {
            matches.push(i);
        }
    }
    match matches.as_slice() {
        [i] => Ok(*i as NodeId),
        [] => Err(IdentityError::NotListed {
            local: local.clone(),
            port: zmq_port,
            unresolved,
        }),
        several => Err(IdentityError::Ambiguous {
            port: zmq_port,
            entries: several.iter().map(|i| hosts[*i].clone()).collect(),
        }),
    }
}

/// Resolves the names of the lines on our port (`(name, port)` through the
/// system resolver: /etc/hosts, DNS). Address literals, lines on other
/// ports, and names that fail to resolve get an empty list.
pub fn resolve(hosts: &[HostEntry], zmq_port: u16) -> Vec<Vec<IpAddr>> {
    hosts
        .iter()
        .map(|e| {
            if entry_port(e, zmq_port) != zmq_port || e.host.parse::<IpAddr>().is_ok() {
                return Vec::new();
            }
            match (e.host.as_str(), zmq_port).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.dedup();
                    ips
                }
                Err(_) => Vec::new(),
            }
        })
        .collect()
}

/// [`identify`] with this machine's addresses and the names resolved: the
/// whole I/O side, as configuration validation runs it. Resolution (which
/// may ask DNS) is skipped when the id is given or there is no hostfile.
pub fn identify_here(
    hosts: &[HostEntry],
    zmq_port: u16,
    explicit: Option<NodeId>,
) -> Result<NodeId, IdentityError> {
    if hosts.is_empty() || explicit.is_some() {
        return identify(hosts, &[], zmq_port, explicit, &LocalAddrs::default());
    }
    let resolved = resolve(hosts, zmq_port);
    identify(hosts, &resolved, zmq_port, explicit, &LocalAddrs::gather())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hostfile::parse_hostfile;

    fn hosts(text: &str) -> Vec<HostEntry> {
        parse_hostfile(text).unwrap()
    }

    /// A machine of the compose cluster: node 1 of 172.20.0.10-12.
    fn machine() -> LocalAddrs {
        LocalAddrs {
            addrs: vec![
                "127.0.0.1".parse().unwrap(),
                "172.20.0.11".parse().unwrap(),
                "::1".parse().unwrap(),
                "fd00::11".parse().unwrap(),
            ],
            names: vec!["node1".into()],
        }
    }

    fn id(text: &str, port: u16, explicit: Option<u32>) -> Result<NodeId, IdentityError> {
        identify(&hosts(text), &[], port, explicit, &machine())
    }

    const COMPOSE: &str = "# the compose cluster\n172.20.0.10\n172.20.0.11\n172.20.0.12\n";

    #[test]
    fn no_hostfile_is_a_single_node() {
        assert_eq!(id("", 5555, None), Ok(0));
        assert_eq!(id("", 5555, Some(0)), Ok(0));
        let e = id("", 5555, Some(2)).unwrap_err();
        assert_eq!(e, IdentityError::NoHostfile { id: 2 });
        assert_eq!(e.key(), "network.node_id");
    }

    #[test]
    fn auto_finds_the_one_line_with_our_address() {
        assert_eq!(id(COMPOSE, 5555, None), Ok(1));
        // The port on the line must be ours; a line without one means ours.
        assert_eq!(
            id("172.20.0.10\n172.20.0.11:5555\n172.20.0.12\n", 5555, None),
            Ok(1)
        );
    }

    #[test]
    fn explicit_id_in_range_and_on_our_port() {
        // Given ids are not checked against our addresses (NAT, proxies).
        assert_eq!(id(COMPOSE, 5555, Some(2)), Ok(2));
        assert_eq!(id("a:6000\nb:5555\n", 5555, Some(1)), Ok(1));

        let e = id(COMPOSE, 5555, Some(3)).unwrap_err();
        assert_eq!(e, IdentityError::OutOfRange { id: 3, hosts: 3 });
        assert_eq!(e.key(), "network.node_id");
        assert!(e.to_string().contains("ids 0 to 2"), "{e}");

        let e = id("a:6000\nb:5555\n", 5555, Some(0)).unwrap_err();
        assert!(
            matches!(e, IdentityError::PortMismatch { id: 0, .. }),
            "{e:?}"
        );
        assert_eq!(e.key(), "network.node_id");
        let msg = e.to_string();
        assert!(
            msg.contains("line 1 (a:6000)") && msg.contains("network.zmq_port is 5555"),
            "{msg}"
        );
    }

    #[test]
    fn auto_none_names_our_addresses_and_port() {
        let e = id("172.20.0.10\n172.20.0.12\n", 5555, None).unwrap_err();
        assert_eq!(e.key(), "network.hostfile");
        let msg = e.to_string();
        assert!(msg.starts_with("this node is not in the hostfile"), "{msg}");
        assert!(
            msg.contains("172.20.0.11") && msg.contains("node1"),
            "{msg}"
        );
        assert!(
            msg.contains("with port 5555") && msg.contains("network.node_id"),
            "{msg}"
        );
        // Our address on another port is another node.
        assert!(matches!(
            id("172.20.0.11:6000\n", 5555, None),
            Err(IdentityError::NotListed { port: 5555, .. })
        ));
    }

    #[test]
    fn auto_ambiguous_lists_the_lines() {
        let e = id("172.20.0.11\n172.20.0.12\n172.20.0.11\n", 5555, None).unwrap_err();
        assert_eq!(e.key(), "network.hostfile");
        let IdentityError::Ambiguous { port, entries } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*port, 5555);
        assert_eq!(entries.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 3]);
        let msg = e.to_string();
        assert!(
            msg.contains("line 1 (172.20.0.11), line 3 (172.20.0.11)"),
            "{msg}"
        );
        // The same machine by address and by name.
        assert!(matches!(
            id("node1\n172.20.0.11\n", 5555, None),
            Err(IdentityError::Ambiguous { .. })
        ));
        // A given id settles it.
        assert_eq!(id("172.20.0.11\n172.20.0.11\n", 5555, Some(1)), Ok(1));
    }

    #[test]
    fn several_nodes_on_loopback_by_port() {
        let text = "127.0.0.1:5601\n127.0.0.1:5602\n127.0.0.1:5603\n";
        assert_eq!(id(text, 5601, None), Ok(0));
        assert_eq!(id(text, 5602, None), Ok(1));
        assert_eq!(id(text, 5603, None), Ok(2));
        assert!(matches!(
            id(text, 5555, None),
            Err(IdentityError::NotListed { port: 5555, .. })
        ));
        // Any 127/8 address is this machine, listed among the interfaces or not.
        let nothing = LocalAddrs::default();
        let h = hosts("127.0.1.1:7000\n127.0.0.1:7001\n");
        assert_eq!(identify(&h, &[], 7000, None, &nothing), Ok(0));
    }

    #[test]
    fn ipv6_entries() {
        assert_eq!(id("[fd00::10]\n[fd00::11]\n", 5555, None), Ok(1));
        assert_eq!(id("fd00::10\nfd00::11\n", 5555, None), Ok(1));
        assert_eq!(id("[::1]:5601\n[::1]:5602\n", 5602, None), Ok(1));
        // An IPv4-mapped address is the IPv4 one.
        assert_eq!(
            id("::ffff:172.20.0.10\n::ffff:172.20.0.11\n", 5555, None),
            Ok(1)
        );
        assert!(id("[fd00::12]\n", 5555, None).is_err());
    }

    #[test]
    fn host_names_by_resolution_or_by_our_name() {
        let h = hosts("node0.cluster\nnode1.cluster\nnode2.cluster\n");
        let resolved: Vec<Vec<IpAddr>> = ["172.20.0.10", "172.20.0.11", "172.20.0.12"]
            .iter()
            .map(|a| vec![a.parse().unwrap()])
            .collect();
        assert_eq!(identify(&h, &resolved, 5555, None, &machine()), Ok(1));
        // Resolving to a loopback address is ours too (localhost:port lines).
        let h = hosts("localhost:5601\nlocalhost:5602\n");
        let lo = vec![vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()]; 2];
        assert_eq!(identify(&h, &lo, 5602, None, &machine()), Ok(1));
        // Our own host name matches without resolution, in any case.
        let h = hosts("node0\nNODE1\nnode2\n");
        assert_eq!(identify(&h, &[], 5555, None, &machine()), Ok(1));
        // Names that resolve to nothing are mentioned when nothing matches.
        let h = hosts("node7\n172.20.0.12\n");
        let msg = identify(&h, &[vec![], vec![]], 5555, None, &machine())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("did not resolve: node7"), "{msg}");
    }

    #[test]
    fn this_machine_is_found_on_loopback() {
        // The real I/O side: loopback is always among our addresses.
        let local = LocalAddrs::gather();
        assert!(local.has_addr("127.0.0.1".parse().unwrap()));
        assert!(local.has_addr("::1".parse().unwrap()));
        let h = hosts("127.0.0.1:41001\n127.0.0.1:41002\n");
        assert_eq!(identify_here(&h, 41002, None), Ok(1));
        let h = hosts("localhost:41001\nlocalhost:41002\n");
        assert_eq!(identify_here(&h, 41001, None), Ok(0));
    }
}
