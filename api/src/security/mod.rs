//! `security.istio.io` resources.

pub mod authorization_policy;
pub mod common;
pub mod condition_key;
pub mod path_template;
pub mod peer_authentication;
pub mod request_authentication;

pub use authorization_policy::{
    Action, AuthorizationPolicy, Condition, ExtensionProvider, Operation, Rule, To,
};
pub use common::*;
pub use condition_key::ConditionKey;
pub use peer_authentication::*;
pub use request_authentication::*;
