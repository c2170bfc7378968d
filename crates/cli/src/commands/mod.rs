pub mod autoscaler;
pub mod ca_bundle;
pub mod db;
pub mod pool;
pub mod run;
pub mod secrets_key;
pub mod server;
pub mod stack;
pub mod token;
pub mod worker;

use crate::client::Api;
use crate::{Failure, OutputFormat};

pub struct Context {
    pub output: OutputFormat,
    pub url: String,
    pub api_token: Option<String>,
    pub additional_root_cas: Option<String>,
}

impl Context {
    pub fn api(&self) -> Result<Api, Failure> {
        Api::new(
            &self.url,
            self.api_token.clone(),
            self.additional_root_cas.as_deref(),
        )
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}
