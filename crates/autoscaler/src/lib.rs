//! Scales an EC2 Auto Scaling group to a Gantry worker pool's demand, and
//! never terminates a worker that holds a run.
//!
//! Each tick reads the pool's demand from the control plane
//! ([`ControlPlane`]: its HTTP API, or the store inside `gantry server`)
//! and the group from AWS ([`AutoScalingGroup`]), matches workers to
//! instances by their `instance_id` tag (`GANTRY_METADATA_instance_id`),
//! decides ([`decide`]), and acts ([`Autoscaler::tick`]):
//! - scale out by raising the group's desired capacity;
//! - scale in one idle worker at a time: drain it through the control plane
//!   (atomically refused if it holds a run), check again, and only then
//!   `TerminateInstanceInAutoScalingGroup` with the capacity decremented;
//! - terminate instances that never registered within the timeout.

mod control_plane;
pub mod decide;
mod group;
mod settings;
mod tick;

/// The SDK itself, for callers that set groups up (the tests, against moto).
pub use aws_sdk_autoscaling;
pub use control_plane::{ControlPlane, HttpControlPlane};
pub use group::{sdk_client, AutoScalingGroup, GroupInstance, GroupState};
pub use settings::Settings;
pub use tick::{Autoscaler, TickReport};
