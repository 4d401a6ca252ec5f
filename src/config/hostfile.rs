//! The hostfile: one node per line; the line's index among the node lines is
//! the node id. Pure parsing, so it is tested without a cluster.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Hostname, IPv4 or IPv6 address (without brackets).
    pub host: String,
    /// Port when the line gives one; otherwise the node listens on network.zmq_port.
    pub port: Option<u16>,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

impl fmt::Display for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = self.host.contains(':');
        match (bracket, self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            _ => write!(f, "{}", self.host),
        }
    }
}

/// Parses a hostfile's text; every bad line is reported as `line N: why`.
pub fn parse_hostfile(text: &str) -> Result<Vec<HostEntry>, Vec<String>> {
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Ok((host, port)) => hosts.push(HostEntry { host, port, line }),
            Err(why) => errors.push(format!("line {line}: {why}")),
        }
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}

fn parse_port(text: &str, entry: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad port {text:?} in {entry:?} (expected 1-65535)")),
    }
}

fn parse_entry(entry: &str) -> Result<(String, Option<u16>), String> {
    if entry.split_whitespace().count() > 1 {
        return Err(format!("one node per line, found {entry:?}"));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {entry:?}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host.to_string(), Some(parse_port(port, entry)?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!(
                "unexpected {after:?} after the address in {entry:?}"
            )),
        };
    }
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((entry.to_string(), None));
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port, entry)?)),
        None => (entry, None),
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid_name {
        return Err(format!("{host:?} is not a hostname or IP address"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_hostfile() {
        let hosts =
            parse_hostfile("# docker/hostfile\n172.20.0.10\n172.20.0.11\n\n172.20.0.12 # last\n")
                .unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["172.20.0.10", "172.20.0.11", "172.20.0.12"]);
        assert_eq!(hosts[2].line, 5);
    }

    #[test]
    fn ports_ipv6_and_names() {
        let hosts = parse_hostfile("127.0.0.1:5601\n[::1]:5602\n::1\nnode-3.cluster\nnode4:7000\n")
            .unwrap();
        assert_eq!(hosts[0].port, Some(5601));
        assert_eq!((hosts[1].host.as_str(), hosts[1].port), ("::1", Some(5602)));
        assert_eq!((hosts[2].host.as_str(), hosts[2].port), ("::1", None));
        assert_eq!(hosts[3].host, "node-3.cluster");
        assert_eq!(hosts[4].to_string(), "node4:7000");
        assert_eq!(hosts[1].to_string(), "[::1]:5602");
    }

    #[test]
    fn bad_lines_are_all_reported() {
        let errs =
            parse_hostfile("ok\nbad host\nh:0\nh:99999\n[::1\n[zz]:1\nunder_score\n").unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs[0].starts_with("line 2:"));
    }
}
