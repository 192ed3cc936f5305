//! The agent's place from the feed's topology (issue 13: agents need no topology file).
//!
//! - An agent started without `--topology` takes the topology of each accepted feed: the
//!   session's locator is replaced (new connections are placed by it; a connected peer
//!   keeps the place it got when it connected), and this host's own place is looked up
//!   (see [`crate::fleet::place`]) for the trackers' BEP 41 URL data.
//! - `--topology` wins over the feed's (it is then never replaced); `--dc`/`--rack` win over
//!   any topology for this host's own place.
//! - The applied text is kept in `.agent/topology.toml`, so a restarted agent announces the
//!   releases it seeds from disk with its place before the first feed arrives.
//! - When the place changes, every torrent is announced again with it (see
//!   [`super::State::reannounce`]).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::AgentConfig;
use crate::fleet::files::write_atomic;
use crate::fleet::place::{own_ip, place_of, tracker_place, url_host_port};
use crate::session::{Locator, NamedPlace, Session, TrackerPlace};
use crate::tracker::topology::Topology;

/// Where the agent stands, for `status`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct PlaceStatus {
    pub dc: Option<String>,
    pub rack: Option<String>,
    /// The address the place was looked up for.
    pub address: Option<String>,
    /// Where the topology comes from: `feed`, `--topology`, or `none`.
    pub topology: String,
}

pub(super) struct FeedTopology {
    /// What `--topology`/`--dc`/`--rack` gave (the locator the session started with).
    configured: Locator,
    stated: TrackerPlace,
    /// The feed's topology text in use (None: the configured locator is).
    applied: Option<String>,
    saved: PathBuf,
    /// Hosts to find our address by, when the session listens on no specific IP.
    targets: Vec<String>,
    /// What the trackers are told now.
    pub place: TrackerPlace,
    status: PlaceStatus,
}

impl FeedTopology {
    pub fn new(config: &AgentConfig, session: &Session, state_dir: &std::path::Path) -> Self {
        let configured = (*config.session.locator).clone();
        let targets = std::iter::once(&config.feed_url)
            .chain(&config.trackers)
            .filter_map(|u| url_host_port(u))
            .collect();
        let mut t = FeedTopology {
            configured,
            stated: config.place.clone(),
            applied: None,
            saved: state_dir.join("topology.toml"),
            targets,
            place: config.place.clone(),
            status: PlaceStatus::default(),
        };
        if let Some(topology) = t.configured.topology().cloned() {
            t.locate(session, &topology, "--topology");
        } else {
            t.status = t.stated_status("none");
            // The last feed's topology, until a feed comes.
            if let Ok(text) = std::fs::read_to_string(&t.saved) {
                t.follow(session, Some(&text));
            }
        }
        t
    }

    pub fn status(&self) -> PlaceStatus {
        self.status.clone()
    }

    /// Takes the topology of an accepted feed. Returns whether the place changed.
    pub fn follow(&mut self, session: &Session, text: Option<&str>) -> bool {
        if self.configured.topology().is_some() || self.applied.as_deref() == text {
            return false;
        }
        let before = self.place.clone();
        match text {
            None => {
                tracing::info!("the feed carries no topology any more; places as configured");
                session.set_locator(self.configured.clone());
                self.place = self.stated.clone();
                self.status = self.stated_status("none");
                self.applied = None;
                std::fs::remove_file(&self.saved).ok();
            }
            Some(text) => {
                let topology = match Topology::from_toml_str(text, "in the feed") {
                    Ok(t) => t,
                    Err(e) => {
                        // A verified feed's topology parsed; only a damaged saved copy ends here.
                        tracing::warn!(err = %e, "topology not used");
                        std::fs::remove_file(&self.saved).ok();
                        return false;
                    }
                };
                session.set_locator(Locator::new(
                    Some(topology.clone()),
                    self.configured.stated().clone(),
                ));
                self.locate(session, &topology, "feed");
                self.applied = Some(text.to_owned());
                if std::fs::read_to_string(&self.saved).ok().as_deref() != Some(text) {
                    if let Err(e) = write_atomic(&self.saved, text.as_bytes()) {
                        tracing::warn!(path = %self.saved.display(), err = %e, "cannot keep the feed's topology");
                    }
                }
            }
        }
        self.place != before
    }

    /// Looks up our own place in `topology`; logs it.
    fn locate(&mut self, session: &Session, topology: &Topology, source: &str) {
        let ip: Option<IpAddr> = own_ip(session.listen_addr(), &self.targets);
        let found = ip.map(|ip| place_of(topology, ip)).unwrap_or_default();
        self.place = tracker_place(&self.stated, &found);
        self.status = PlaceStatus {
            dc: self.place.dc.clone(),
            rack: self.place.rack.clone(),
            address: ip.map(|ip| ip.to_string()),
            topology: source.to_owned(),
        };
        match ip {
            Some(ip) if found != NamedPlace::default() => tracing::info!(
                address = %ip,
                dc = self.place.dc.as_deref().unwrap_or("-"),
                rack = self.place.rack.as_deref().unwrap_or("-"),
                "placed by the {source} topology"
            ),
            Some(ip) => tracing::warn!(address = %ip, "the {source} topology does not place this host; peers are still placed by it"),
            None => tracing::warn!("cannot tell this host's address (no --listen IP, no resolvable feed or tracker host); peers are still placed by the {source} topology"),
        }
    }

    fn stated_status(&self, source: &str) -> PlaceStatus {
        PlaceStatus {
            dc: self.stated.dc.clone(),
            rack: self.stated.rack.clone(),
            address: None,
            topology: source.to_owned(),
        }
    }
}

impl super::State {
    /// Announces every torrent again with the place now known. The old announcers say
    /// `stopped` first (all at once, each within its stop timeout of 2 s, so the agent
    /// pauses that long on a topology change): a tracker that heard `stopped` after the
    /// new `started` would forget the peer.
    pub(super) fn reannounce(&mut self) {
        let mut old = Vec::new();
        for d in self.downloads.values_mut() {
            old.extend(d.announcer.take());
        }
        for h in self.held.values_mut().flatten() {
            old.extend(h.announcer.take());
        }
        if old.is_empty() {
            return;
        }
        std::thread::scope(|s| {
            for a in old {
                s.spawn(move || a.stop());
            }
        });
        let place = self.topology.place.clone();
        let announce = |release: &crate::feed::Release, handle: &crate::session::TorrentHandle| {
            let meta = release.parse_metainfo().ok()?;
            let tiers = crate::session::tracker_tiers(&meta, &self.config.trackers);
            let own = self.session.listen_addr()?;
            (!tiers.is_empty()).then(|| {
                crate::session::announce_torrent(handle, tiers, self.session.peer_id(), own, &place)
            })
        };
        let mut renewed = Vec::new();
        for (hash, d) in &self.downloads {
            renewed.push((Some(*hash), None, announce(&d.release, &d.handle)));
        }
        for (name, list) in &self.held {
            for (i, h) in list.iter().enumerate() {
                if let Some(handle) = &h.handle {
                    renewed.push((None, Some((name.clone(), i)), announce(&h.release, handle)));
                }
            }
        }
        for (hash, held, announcer) in renewed {
            if let Some(d) = hash.and_then(|h| self.downloads.get_mut(&h)) {
                d.announcer = announcer;
            } else if let Some(h) = held.and_then(|(name, i)| self.held.get_mut(&name)?.get_mut(i))
            {
                h.announcer = announcer;
            }
        }
    }
}
