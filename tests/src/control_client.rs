//! The runner's own Phoenix client (`runner::control`) pointed at a
//! simulator, for the tests that drive it by hand.

use runner::control::{ControlChannel, ControlClient, ControlConfig, JoinInfo, Timing};

use crate::simulator::Simulator;

/// What the client joins with: `runner_id` on a Linux box, backend procfs,
/// config version 2.
pub fn join_info(runner_id: &str) -> JoinInfo {
    JoinInfo {
        runner_id: runner_id.into(),
        version: "0.1.0".into(),
        hostname: "box".into(),
        os: "linux".into(),
        backend: "procfs".into(),
        config_version: 2,
    }
}

/// A client of `sim` (its URL and token) joining as `runner_id`, on
/// `timing`.
pub fn control_client(sim: &Simulator, runner_id: &str, timing: Timing) -> ControlChannel {
    let join = join_info(runner_id);
    let mut config = ControlConfig::new(sim.url(), Some(sim.token().to_owned()), join);
    config.timing = timing;
    ControlClient::spawn(config)
}
