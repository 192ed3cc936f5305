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
