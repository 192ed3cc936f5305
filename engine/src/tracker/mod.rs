//! The fleet's own UDP tracker (BEP 15) and its client.
//!
//! - [`proto`]: BEP 15 packets and BEP 41 URL data; pure.
//! - [`client`]: announcing to trackers (BEP 15 retry schedule, BEP 12 tiers).
//! - [`topology`]: CIDR → datacenter/rack map from TOML.
//! - [`server`]: the tracker on the io_uring reactor, one worker per core.
//! - [`limits`]: the tracker-wide peer cap and per-source torrent creation budget,
//!   shared by every core's store.
//! - [`store`]: the tracker's swarm state (sans-I/O): peers, expiry, bounds, scrape
//!   counts, connection ids, and topology-ordered peer lists.

pub mod client;
pub mod limits;
pub use ringswarm_proto::tracker as proto;
pub mod server;
pub mod store;
pub use ringswarm_proto::topology;

/// Reads and parses a topology file (the format is [`topology`]'s; the reading is here,
/// the formats do no I/O).
pub fn load_topology(
    path: &std::path::Path,
) -> Result<topology::Topology, topology::TopologyError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| topology::TopologyError::Io {
        origin: origin.clone(),
        source,
    })?;
    topology::Topology::from_toml_str(&text, &origin)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_topology_file_is_an_io_error_naming_it() {
        let e = super::load_topology(std::path::Path::new("/nonexistent/fleet.toml"));
        match e {
            Err(super::topology::TopologyError::Io { origin, .. }) => {
                assert_eq!(origin, "/nonexistent/fleet.toml")
            }
            other => panic!("{other:?}"),
        }
    }
}
