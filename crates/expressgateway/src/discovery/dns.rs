//! A minimal DNS stub resolver: A and AAAA queries over UDP (RFC 1035) to
//! the configured servers, or those of `/etc/resolv.conf`, returning every
//! address with the smallest TTL of the answer. Names are queried as
//! written (no search list). Responses are parsed bounds-checked: a
//! malformed one is an error, never a panic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Largest DNS message over UDP without EDNS (RFC 1035 §4.2.1); a longer
/// answer comes truncated and its records read so far are used.
const MAX_MESSAGE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    /// Smallest TTL among the address records.
    pub ttl: Duration,
}

/// `name`'s A and AAAA records from the first server that answers both
/// queries within `timeout`.
pub async fn resolve(name: &str, servers: &[SocketAddr], timeout: Duration) -> io::Result<Answer> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no DNS server configured");
    for server in servers {
        match tokio::time::timeout(timeout, ask(name, *server)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(io::ErrorKind::TimedOut, format!("{server}: no answer"))
            }
        }
    }
    Err(last)
}

async fn ask(name: &str, server: SocketAddr) -> io::Result<Answer> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    let ids: [u16; 2] = rand::random();
    socket.send(&query(ids[0], name, TYPE_A)?).await?;
    socket.send(&query(ids[1], name, TYPE_AAAA)?).await?;
    let mut got = [None, None];
    let mut buf = [0u8; MAX_MESSAGE];
    while got.iter().any(Option::is_none) {
        let n = socket.recv(&mut buf).await?;
        let Some(reply) = buf.get(..n) else { continue };
        for (slot, id) in got.iter_mut().zip(ids) {
            if slot.is_none() {
                if let Some(parsed) = parse(reply, id) {
                    *slot = Some(parsed?);
                }
            }
        }
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for (a, t) in got.into_iter().flatten() {
        addrs.extend(a);
        ttl = ttl.min(t);
    }
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no A or AAAA record"),
        ));
    }
    Ok(Answer {
        addrs,
        ttl: Duration::from_secs(u64::from(ttl)),
    })
}

/// A recursive query for `name` (`qtype`, class IN).
pub fn query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad DNS label"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// `None`: not the reply to `id`. `Some(Err)`: the server said no (or sent
/// garbage). `Some(Ok)`: the addresses and smallest TTL (no records: an
/// empty list and `u32::MAX`).
pub fn parse(msg: &[u8], id: u16) -> Option<io::Result<(Vec<IpAddr>, u32)>> {
    let bad = |why: &str| {
        Some(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            why.to_owned(),
        )))
    };
    let header = msg.get(..12)?;
    if u16::from_be_bytes([header[0], header[1]]) != id || header[2] & 0x80 == 0 {
        return None;
    }
    match header[3] & 0x0f {
        0 => {}
        3 => return Some(Ok((Vec::new(), u32::MAX))), // NXDOMAIN
        rcode => return bad(&format!("DNS error code {rcode}")),
    }
    let qd = u16::from_be_bytes([header[4], header[5]]);
    let an = u16::from_be_bytes([header[6], header[7]]);
    let mut at = 12;
    for _ in 0..qd {
        let Some(next) = skip_name(msg, at).and_then(|p| p.checked_add(4)) else {
            return bad("truncated question");
        };
        at = next;
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..an {
        let Some(p) = skip_name(msg, at) else { break };
        let Some(fixed) = msg.get(p..p + 10) else {
            break;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(data) = msg.get(p + 10..p + 10 + len) else {
            break;
        };
        let addr = match (rtype, data.len()) {
            (TYPE_A, 4) => <[u8; 4]>::try_from(data).ok().map(IpAddr::from),
            (TYPE_AAAA, 16) => <[u8; 16]>::try_from(data).ok().map(IpAddr::from),
            _ => None,
        };
        if let Some(a) = addr {
            addrs.push(a);
            ttl = ttl.min(rttl);
        }
        at = p + 10 + len;
    }
    Some(Ok((addrs, ttl)))
}

/// The offset after a (possibly compressed) name starting at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            l => at += 1 + usize::from(l),
        }
    }
}

/// The `nameserver` lines of `/etc/resolv.conf`, port 53.
pub fn system_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` with one A record per address, TTLs as given, the
    /// answer names compressed to the question.
    pub(crate) fn reply(q: &[u8], records: &[([u8; 4], u32)]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = records.len() as u8;
        for (ip, ttl) in records {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(ip);
        }
        r
    }

    #[test]
    fn answers_are_read_with_the_smallest_ttl() {
        let q = query(7, "svc.example", TYPE_A).expect("query");
        let r = reply(&q, &[([10, 0, 0, 1], 30), ([10, 0, 0, 2], 5)]);
        let (addrs, ttl) = parse(&r, 7).expect("ours").expect("ok");
        assert_eq!(addrs.len(), 2);
        assert_eq!(ttl, 5);
        assert!(parse(&r, 8).is_none(), "another query's reply");
        for cut in 0..r.len() {
            let _ = parse(&r[..cut], 7);
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(query(1, "a..b", TYPE_A).is_err());
        assert!(query(1, &"x".repeat(64), TYPE_A).is_err());
    }
}
