//! What every Lambda does at cold start, before it takes its first event:
//! start logging, read its configuration (failing with the variable's name),
//! read the Redis AUTH token from Secrets Manager when one is configured, and
//! connect to Redis, checking the connection. The mains then only build their
//! handler's dependencies and run it.

use aws_config::SdkConfig;

use crate::config::{Component, RedisAuth};
use crate::db::store::Redis;

/// Why a Lambda could not start (configuration, secret or Redis).
pub type BootError = Box<dyn std::error::Error + Send + Sync>;

/// Boots a Lambda whose configuration is `C`. `sdk` is the process's AWS
/// configuration when it has one already (for S3 or SQS); without it, one is
/// loaded only if the AUTH token must be read from Secrets Manager.
pub async fn boot<C: Component>(sdk: Option<&SdkConfig>) -> Result<(C, Redis), BootError> {
    let mut config = C::from_env()?;
    crate::logging::init(config.log_format());
    if matches!(config.redis_mut().auth, RedisAuth::SecretArn(_)) {
        let loaded;
        let sdk = match sdk {
            Some(s) => s,
            None => {
                loaded = super::sdk_config().await;
                &loaded
            }
        };
        super::resolve_redis_auth(config.redis_mut(), sdk).await?;
    }
    let redis = Redis::connect_checked(config.redis_mut()).await?;
    Ok((config, redis))
}
