use std::time::Duration;

/// How one autoscaler runs: which pool, which group, how eagerly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The worker pool's name or ID.
    pub pool: String,
    /// The Auto Scaling group's name.
    pub asg_name: String,
    /// Time between ticks.
    pub interval: Duration,
    /// A worker is removed only after it has been idle this long.
    pub scale_in_delay: Duration,
    /// Busy workers per instance wanted: 1.0 keeps no spare; 0.5 keeps one
    /// spare instance per busy one.
    pub target_utilization: f64,
    /// The most instances added or removed in one tick; `None` for no limit.
    pub max_step: Option<u32>,
    /// An instance whose worker has not registered after this long is
    /// terminated (its reason logged).
    pub registration_timeout: Duration,
}

impl Settings {
    pub fn new(pool: &str, asg_name: &str) -> Settings {
        Settings {
            pool: pool.to_string(),
            asg_name: asg_name.to_string(),
            interval: Duration::from_secs(30),
            scale_in_delay: Duration::from_secs(5 * 60),
            target_utilization: 1.0,
            max_step: None,
            registration_timeout: Duration::from_secs(10 * 60),
        }
    }

    /// Every setting checked, the error naming the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.pool.trim().is_empty() {
            return Err("--pool: give the worker pool's name".into());
        }
        if self.asg_name.trim().is_empty() {
            return Err("--asg-name: give the Auto Scaling group's name".into());
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return Err(format!(
                "--target-utilization {}: use a number above 0 and at most 1 (1.0 keeps no spare instance)",
                self.target_utilization
            ));
        }
        if self.max_step == Some(0) {
            return Err("--max-step 0: use at least 1, or leave it out for no limit".into());
        }
        if self.interval.is_zero() {
            return Err("--interval: use a positive duration, e.g. 30s".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn bad_settings_name_their_flag() {
        let ok = Settings::new("linux", "workers");
        assert!(ok.validate().is_ok());
        let cases = [
            (
                Settings {
                    target_utilization: 0.0,
                    ..ok.clone()
                },
                "--target-utilization",
            ),
            (
                Settings {
                    target_utilization: 1.5,
                    ..ok.clone()
                },
                "--target-utilization",
            ),
            (
                Settings {
                    max_step: Some(0),
                    ..ok.clone()
                },
                "--max-step",
            ),
            (
                Settings {
                    pool: " ".into(),
                    ..ok.clone()
                },
                "--pool",
            ),
            (
                Settings {
                    asg_name: String::new(),
                    ..ok.clone()
                },
                "--asg-name",
            ),
            (
                Settings {
                    interval: std::time::Duration::ZERO,
                    ..ok.clone()
                },
                "--interval",
            ),
        ];
        for (settings, flag) in cases {
            let error = settings.validate().unwrap_err();
            assert!(error.starts_with(flag), "{error}");
        }
    }
}
