//! The EC2 Auto Scaling group, through the official AWS SDK: the standard
//! credential chain, `AWS_REGION`, and `AWS_ENDPOINT_URL` for another
//! endpoint (a VPC endpoint, or a test double such as moto).

use anyhow::Context;
use aws_config::BehaviorVersion;
use aws_sdk_autoscaling::error::DisplayErrorContext;
use aws_sdk_autoscaling::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The group as one `DescribeAutoScalingGroups` saw it.
#[derive(Debug, Clone)]
pub struct GroupState {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Instances that are launching or in service; the ones terminating,
    /// detaching or in standby are not counted.
    pub instances: Vec<GroupInstance>,
}

#[derive(Debug, Clone)]
pub struct GroupInstance {
    pub id: String,
    /// `Pending`, `Pending:Wait`, `Pending:Proceed` or `InService`.
    pub lifecycle_state: String,
}

pub struct AutoScalingGroup {
    client: Client,
    name: String,
}

fn counted(lifecycle_state: &str) -> bool {
    lifecycle_state == "InService" || lifecycle_state.starts_with("Pending")
}

/// An Auto Scaling client configured from the environment (credentials,
/// region, endpoint); fails when no region is set.
pub async fn sdk_client() -> anyhow::Result<Client> {
    // rustls on ring, as the rest of Gantry: no C crypto to build.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    if config.region().is_none() {
        anyhow::bail!(
            "no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1) or a region in the AWS profile"
        );
    }
    Ok(Client::new(&config))
}

impl AutoScalingGroup {
    pub async fn connect(name: &str) -> anyhow::Result<AutoScalingGroup> {
        Ok(AutoScalingGroup {
            client: sdk_client().await?,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn describe(&self) -> anyhow::Result<GroupState> {
        let output = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.name)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("DescribeAutoScalingGroups: {}", DisplayErrorContext(e))
            })?;
        let group = output
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(self.name.as_str()))
            .with_context(|| {
                format!(
                    "--asg-name {}: no Auto Scaling group by that name in this account and region (check AWS_REGION)",
                    self.name
                )
            })?;
        let count = |v: Option<i32>| v.unwrap_or(0).max(0) as u32;
        Ok(GroupState {
            min: count(group.min_size()),
            max: count(group.max_size()),
            desired: count(group.desired_capacity()),
            instances: group
                .instances()
                .iter()
                .filter_map(|i| {
                    let state = i.lifecycle_state()?.as_str().to_string();
                    Some(GroupInstance {
                        id: i.instance_id()?.to_string(),
                        lifecycle_state: state,
                    })
                })
                .filter(|i| counted(&i.lifecycle_state))
                .collect(),
        })
    }

    pub async fn set_desired_capacity(&self, desired: u32) -> anyhow::Result<()> {
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(&self.name)
            .desired_capacity(desired as i32)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("SetDesiredCapacity: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    /// `TerminateInstanceInAutoScalingGroup`; with `decrement`, the group
    /// does not launch a replacement.
    pub async fn terminate(&self, instance_id: &str, decrement: bool) -> anyhow::Result<()> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "TerminateInstanceInAutoScalingGroup {instance_id}: {}",
                    DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }
}
