//! What a process tree listens on, read from /proc: every TCP socket in LISTEN and every bound,
//! unconnected UDP socket held by a process or any of its descendants.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Listening {
    pub(crate) proto: &'static str,
    pub(crate) addr: SocketAddr,
    /// The holder's command name and pid.
    pub(crate) process: String,
}

/// `root` and everything it started, by parent pid.
fn descendants(root: u32) -> BTreeMap<u32, String> {
    let mut parent = BTreeMap::new();
    let mut comm = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        if let Some(ppid) = rest.get(1).and_then(|p| p.parse::<u32>().ok()) {
            parent.insert(pid, ppid);
            comm.insert(pid, stat[open + 1..close].to_owned());
        }
    }
    let mut out = BTreeMap::from([(root, comm.get(&root).cloned().unwrap_or_default())]);
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(pid, ppid)| out.contains_key(ppid) && !out.contains_key(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return out;
        }
        for pid in more {
            out.insert(pid, comm.get(&pid).cloned().unwrap_or_default());
        }
    }
}

fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            let s = link.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// /proc/net's "0100007F:1F90" (IPv4) or 32 hex digits (IPv6): the kernel prints each 32-bit
/// word of the address as a number in the machine's own byte order.
fn parse_addr(hex: &str) -> Option<SocketAddr> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::new();
    for i in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every listening socket of `root`'s process tree.
pub(crate) fn listening(root: u32) -> Vec<Listening> {
    let procs = descendants(root);
    let mut owner = BTreeMap::new();
    for (pid, comm) in &procs {
        for inode in socket_inodes(*pid) {
            owner.insert(inode, format!("{comm}[{pid}]"));
        }
    }
    let mut out = BTreeSet::new();
    for (file, proto, wanted_state) in [
        ("tcp", "tcp", "0A"),
        ("tcp6", "tcp", "0A"),
        ("udp", "udp", "07"),
        ("udp6", "udp", "07"),
    ] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            // A connected UDP socket has a peer: it sends, it does not serve.
            let unconnected = remote.split_once(':').is_some_and(|(_, p)| p == "0000");
            if *state != wanted_state || (proto == "udp" && !unconnected) {
                continue;
            }
            let Some(process) = inode.parse::<u64>().ok().and_then(|i| owner.get(&i)) else {
                continue;
            };
            if let Some(addr) = parse_addr(local) {
                out.insert(Listening {
                    proto,
                    addr,
                    process: process.clone(),
                });
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn proc_net_addresses_parse() {
    assert_eq!(
        parse_addr("0100007F:1F90"),
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(
        parse_addr("00000000:0050"),
        Some("0.0.0.0:80".parse().unwrap())
    );
    assert_eq!(
        parse_addr("00000000000000000000000001000000:0016"),
        Some("[::1]:22".parse().unwrap())
    );
    let me = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = me.local_addr().unwrap().port();
    let mine = listening(std::process::id());
    assert!(
        mine.iter()
            .any(|l| l.proto == "tcp" && l.addr == SocketAddr::from(([127, 0, 0, 1], port))),
        "{mine:?}"
    );
}
