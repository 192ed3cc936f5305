//! Where this host stands when its place comes from the fleet's topology rather than from
//! `--dc`/`--rack`: the topology's match for the address it talks to the fleet from.
//!
//! That address is the session's listening IP when it is a specific one (outgoing
//! connections leave from it, so peers see it too), else the local address the kernel
//! picks to reach the feed's or a tracker's host: a connected UDP socket, no packet sent.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::session::{NamedPlace, TrackerPlace};
use crate::tracker::topology::Topology;

/// `host:port` of a URL (`http://h:p/x`, `udp://h:p`; http without a port means 80).
pub fn url_host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    Some(match (has_port, scheme) {
        (true, _) => authority.to_owned(),
        (false, "http") => format!("{authority}:80"),
        (false, _) => return None,
    })
}

/// The address this host reaches the fleet from (see the module doc); None when no
/// target resolves.
pub fn own_ip(listen: Option<SocketAddr>, targets: &[String]) -> Option<IpAddr> {
    if let Some(ip) = listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
        return Some(ip);
    }
    for target in targets {
        let Ok(addrs) = target.to_socket_addrs() else {
            continue;
        };
        for addr in addrs {
            let any: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let local = UdpSocket::bind(any)
                .and_then(|s| s.connect(addr).map(|()| s))
                .and_then(|s| s.local_addr());
            if let Ok(local) = local {
                return Some(local.ip());
            }
        }
    }
    None
}

/// The topology's place for `ip`, by name (as [`crate::session::Locator`] names it).
pub fn place_of(topology: &Topology, ip: IpAddr) -> NamedPlace {
    let Some(p) = topology.lookup(ip) else {
        return NamedPlace::default();
    };
    NamedPlace {
        dc: topology.dc_name(p.dc).map(str::to_owned),
        rack: topology.rack_name(p.rack).map(|(_, rack)| rack.to_owned()),
    }
}

/// What the trackers are told: the stated dc and rack, each filled from `found` when not
/// stated.
pub fn tracker_place(stated: &TrackerPlace, found: &NamedPlace) -> TrackerPlace {
    TrackerPlace {
        dc: stated.dc.clone().or_else(|| found.dc.clone()),
        rack: stated.rack.clone().or_else(|| found.rack.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_host_and_port() {
        let hp = |u: &str| url_host_port(u);
        assert_eq!(
            hp("http://origin:8470/feed.json").as_deref(),
            Some("origin:8470")
        );
        assert_eq!(hp("http://origin/feed.json").as_deref(), Some("origin:80"));
        assert_eq!(
            hp("udp://127.0.0.1:6969").as_deref(),
            Some("127.0.0.1:6969")
        );
        assert_eq!(hp("http://[::1]:80/x").as_deref(), Some("[::1]:80"));
        assert_eq!(hp("http://[::1]/x").as_deref(), Some("[::1]:80"));
        assert_eq!(hp("udp://tracker"), None);
        assert_eq!(hp("feed.json"), None);
    }

    #[test]
    fn the_listening_ip_wins_else_the_route_to_a_target() {
        let listen: SocketAddr = "127.0.1.5:0".parse().unwrap();
        assert_eq!(
            own_ip(Some(listen), &[]),
            Some("127.0.1.5".parse().unwrap())
        );
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let to_lo = own_ip(Some(any), &["127.0.2.9:80".into()]).unwrap();
        assert!(to_lo.is_loopback(), "{to_lo}");
        assert_eq!(own_ip(None, &["no-such-host.invalid:80".into()]), None);
    }

    #[test]
    fn stated_names_win_over_found_ones() {
        let topo = Topology::from_toml_str(
            "[[subnet]]\ncidr = \"127.0.1.0/24\"\ndc = \"lo\"\nrack = \"r1\"\n",
            "test",
        )
        .unwrap();
        let found = place_of(&topo, "127.0.1.5".parse().unwrap());
        assert_eq!(
            (found.dc.as_deref(), found.rack.as_deref()),
            (Some("lo"), Some("r1"))
        );
        assert!(place_of(&topo, "127.0.3.1".parse().unwrap()).is_unknown());
        let stated = TrackerPlace {
            dc: None,
            rack: Some("mine".into()),
        };
        let told = tracker_place(&stated, &found);
        assert_eq!(
            (told.dc.as_deref(), told.rack.as_deref()),
            (Some("lo"), Some("mine"))
        );
    }
}
