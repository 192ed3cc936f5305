//! Where a peer stands relative to us: same rack, same datacenter, or remote.
//!
//! Our place comes from `--dc`/`--rack`, else from the topology file (the same TOML the
//! tracker loads) matched against the local address of the connection. A peer's place comes
//! from the topology matched against its address, else from the `dc`/`rack` keys of its
//! BEP 10 handshake. The topology wins over what a peer states, as in the tracker.
//!
//! When we do not know our own rack every peer counts as rack-local: no preference at
//! all, exactly the behaviour of a plain BitTorrent client. When we do, a peer whose place
//! is unknown counts as remote, so an unplaced peer is never mistaken for a cheap one.

use std::net::IpAddr;

use ringswarm_proto::topology::Topology;

use crate::picker::Share;

/// A place by name. `None` is unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedPlace {
    pub dc: Option<String>,
    pub rack: Option<String>,
}

impl NamedPlace {
    pub fn is_unknown(&self) -> bool {
        self.dc.is_none() && self.rack.is_none()
    }
}

/// How far a peer is, in the order we prefer peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Locality {
    /// Same rack (or we do not know where we are).
    Rack,
    /// Same datacenter, another rack.
    Dc,
    /// Another datacenter, or unknown while we know our own place.
    Remote,
}

/// Places us and our peers.
#[derive(Clone, Debug, Default)]
pub struct Locator {
    topology: Option<Topology>,
    /// Stated with `--dc`/`--rack`; wins over the topology.
    ours: NamedPlace,
}

impl Locator {
    pub fn new(topology: Option<Topology>, ours: NamedPlace) -> Locator {
        Locator { topology, ours }
    }

    /// True when neither a topology nor a stated place can place anyone.
    pub fn is_blind(&self) -> bool {
        self.topology.is_none() && self.ours.is_unknown()
    }

    fn topology_place(&self, ip: IpAddr) -> Option<NamedPlace> {
        let topo = self.topology.as_ref()?;
        let p = topo.lookup(ip)?;
        Some(NamedPlace {
            dc: topo.dc_name(p.dc).map(str::to_owned),
            rack: topo.rack_name(p.rack).map(|(_, rack)| rack.to_owned()),
        })
    }

    /// Our rack's share of the pieces our dc fetches from other dcs
    /// ([`crate::Shared::set_dc_share`]): our rack's rank among the racks the topology
    /// lists in our dc, but for `idle` (racks known to hold no downloading host, such as a
    /// build host's: a piece of their share would wait for the grace to pass). Without a
    /// topology, or a place in it, every rack may fetch any piece ([`Share::ALL`]).
    pub fn dc_share(&self, ours: &NamedPlace, idle: &[&str]) -> Share {
        let (Some(topo), Some(dc), Some(rack)) = (&self.topology, &ours.dc, &ours.rack) else {
            return Share::ALL;
        };
        let racks: Vec<&str> = topo
            .racks_in_dc(dc)
            .into_iter()
            .filter(|r| !idle.contains(r) || *r == rack.as_str())
            .collect();
        match racks.iter().position(|r| r == rack) {
            Some(rank) => Share {
                rank: rank as u32,
                members: racks.len() as u32,
            },
            None => Share::ALL,
        }
    }

    /// Our place on a connection whose local address is `local`.
    pub fn our_place(&self, local: Option<IpAddr>) -> NamedPlace {
        if !self.ours.is_unknown() {
            return self.ours.clone();
        }
        local
            .and_then(|ip| self.topology_place(ip))
            .unwrap_or_default()
    }

    /// A peer's place: the topology's match for `ip`, else what it `stated`.
    pub fn peer_place(&self, ip: IpAddr, stated: Option<&NamedPlace>) -> NamedPlace {
        self.topology_place(ip)
            .or_else(|| stated.cloned())
            .unwrap_or_default()
    }

    /// The topology, when one was given.
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// The place stated with `--dc`/`--rack`.
    pub fn stated(&self) -> &NamedPlace {
        &self.ours
    }

    /// True when the topology places `ip` (what the peer states then does not matter).
    pub fn places(&self, ip: IpAddr) -> bool {
        self.topology_place(ip).is_some()
    }
}

/// How far `theirs` is from `ours` (see the module doc).
pub fn locality(ours: &NamedPlace, theirs: &NamedPlace) -> Locality {
    let Some(our_rack) = &ours.rack else {
        return match (&ours.dc, &theirs.dc) {
            // We know only our dc: the dc is as close as we can tell.
            (Some(a), Some(b)) if a == b => Locality::Rack,
            (Some(_), _) => Locality::Remote,
            (None, _) => Locality::Rack,
        };
    };
    let same_dc = ours.dc == theirs.dc;
    if same_dc && theirs.rack.as_ref() == Some(our_rack) {
        Locality::Rack
    } else if same_dc && ours.dc.is_some() {
        Locality::Dc
    } else {
        Locality::Remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(dc: Option<&str>, rack: Option<&str>) -> NamedPlace {
        NamedPlace {
            dc: dc.map(Into::into),
            rack: rack.map(Into::into),
        }
    }

    #[test]
    fn the_racks_of_a_dc_split_its_wan_pieces_by_name() {
        let text = "[[subnet]]\ncidr = \"10.0.3.0/24\"\ndc = \"east\"\nrack = \"r3\"\n\
                    [[subnet]]\ncidr = \"10.0.1.0/24\"\ndc = \"east\"\nrack = \"r1\"\n\
                    [[subnet]]\ncidr = \"10.0.9.0/24\"\ndc = \"east\"\nrack = \"build\"\n\
                    [[subnet]]\ncidr = \"10.1.1.0/24\"\ndc = \"west\"\nrack = \"r1\"\n";
        let topo = Topology::from_toml_str(text, "t").unwrap();
        let l = Locator::new(Some(topo), NamedPlace::default());
        let share = |dc, rack, idle: &[&str]| l.dc_share(&place(Some(dc), Some(rack)), idle);
        assert_eq!(
            share("east", "r1", &[]),
            Share {
                rank: 1,
                members: 3
            }
        );
        assert_eq!(
            share("east", "r3", &["build"]),
            Share {
                rank: 1,
                members: 2
            }
        );
        assert_eq!(share("west", "r1", &[]), Share::ALL);
        assert_eq!(
            share("east", "r9", &[]),
            Share::ALL,
            "a rack the file lacks"
        );
        let blind = Locator::default();
        assert_eq!(
            blind.dc_share(&place(Some("east"), Some("r1")), &[]),
            Share::ALL
        );
    }

    #[test]
    fn localities() {
        let r1 = place(Some("east"), Some("r1"));
        let r2 = place(Some("east"), Some("r2"));
        let west = place(Some("west"), Some("r1"));
        let unknown = NamedPlace::default();
        assert_eq!(locality(&r1, &r1), Locality::Rack);
        assert_eq!(locality(&r1, &r2), Locality::Dc);
        // Same rack name in another dc is another rack.
        assert_eq!(locality(&r1, &west), Locality::Remote);
        assert_eq!(locality(&r1, &unknown), Locality::Remote);
        // We do not know where we are: no preference.
        assert_eq!(locality(&unknown, &r1), Locality::Rack);
        assert_eq!(locality(&unknown, &unknown), Locality::Rack);
        // Racks without dcs.
        let a = place(None, Some("a"));
        let b = place(None, Some("b"));
        assert_eq!(locality(&a, &a), Locality::Rack);
        assert_eq!(locality(&a, &b), Locality::Remote);
        // Only our dc known.
        let east = place(Some("east"), None);
        assert_eq!(locality(&east, &r1), Locality::Rack);
        assert_eq!(locality(&east, &west), Locality::Remote);
    }

    #[test]
    fn topology_wins_over_stated_place() {
        let topo = Topology::from_toml_str(
            "[[subnet]]\ncidr = \"198.18.1.0/24\"\ndc = \"east\"\nrack = \"r1\"\n",
            "test",
        )
        .unwrap();
        let loc = Locator::new(Some(topo), NamedPlace::default());
        let ip: IpAddr = "198.18.1.7".parse().unwrap();
        let other: IpAddr = "198.18.2.7".parse().unwrap();
        let liar = place(Some("east"), Some("r9"));
        assert_eq!(
            loc.peer_place(ip, Some(&liar)),
            place(Some("east"), Some("r1"))
        );
        assert!(loc.places(ip) && !loc.places(other));
        assert_eq!(loc.peer_place(other, Some(&liar)), liar);
        assert_eq!(loc.our_place(Some(ip)), place(Some("east"), Some("r1")));
        assert_eq!(loc.our_place(Some(other)), NamedPlace::default());
        // A stated place of our own wins.
        let stated = Locator::new(None, place(Some("west"), Some("r3")));
        assert_eq!(stated.our_place(Some(ip)), place(Some("west"), Some("r3")));
        assert!(Locator::default().is_blind() && !stated.is_blind());
    }

    #[test]
    fn without_a_topology_a_peer_is_where_it_says_and_unknown_when_silent() {
        let loc = Locator::new(None, place(Some("east"), Some("r1")));
        let ip: IpAddr = "198.18.1.7".parse().unwrap();
        let stated = place(Some("west"), Some("r2"));
        assert_eq!(loc.peer_place(ip, Some(&stated)), stated);
        assert_eq!(loc.peer_place(ip, None), NamedPlace::default());
        assert!(!loc.places(ip));
        let topo = Topology::from_toml_str(
            "[[subnet]]\ncidr = \"198.18.1.0/24\"\ndc = \"east\"\nrack = \"r1\"\n",
            "test",
        )
        .unwrap();
        assert!(
            !Locator::new(Some(topo), NamedPlace::default()).is_blind(),
            "a topology alone places peers"
        );
    }
}
