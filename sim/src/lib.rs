//! The fleet simulator (issue 14), groundwork: the scenario file ([`scenario`]), the units
//! it is written in ([`units`]) and a flow-level network model ([`net`]). The driver that
//! runs the swarm core and the tracker store over [`net`] comes later.
#![forbid(unsafe_code)]

pub mod net;
pub mod plot;
pub mod report;
pub mod scenario;
pub use ringswarm_proto::units;
