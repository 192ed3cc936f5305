//! The fleet simulator (issue 14): the real swarm core and the real tracker store, for
//! thousands of hosts, over a flow-level network, on virtual time. [`scenario`] reads the
//! fleet's shape, [`net`] shares links among flows, [`world`] is the driver, [`report`]
//! what a run tells.
#![forbid(unsafe_code)]

pub mod net;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod world;
pub use ringswarm_proto::units;

/// Runs a scenario to its end: a pure function of the scenario (its seed included), but
/// for the report's wall time and memory.
pub fn run(scenario: &scenario::Scenario) -> Result<report::Report, world::WorldError> {
    Ok(world::World::new(scenario)?.run())
}
