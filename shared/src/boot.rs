//! What every Lambda does at cold start, before it takes its first event:
//! start logging, read its configuration (failing with the variable's name),
//! read the Redis AUTH token from Secrets Manager when one is configured, and
//! connect to Redis, checking the connection. The mains then only build their
//! handler's dependencies and run it.
//!
//! The same code talks to AWS and to a local emulator: the standard
//! `AWS_ENDPOINT_URL` (honoured by `aws-config`) points it there.

use aws_config::{BehaviorVersion, SdkConfig};

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
                loaded = sdk_config().await;
                &loaded
            }
        };
        resolve_redis_auth(config.redis_mut(), sdk).await?;
    }
    let redis = Redis::connect_checked(config.redis_mut()).await?;
    Ok((config, redis))
}

/// Loads region, credentials and endpoint from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// Resolves a Redis AUTH token kept in Secrets Manager (read once, at cold
/// start). The secret holds `{"username": "…", "token": "…"}` (a Redis ACL
/// user, as the template makes one per role), `{"token": "…"}` or the bare
/// token.
pub async fn resolve_redis_auth(
    redis: &mut crate::config::RedisConfig,
    cfg: &SdkConfig,
) -> Result<(), AuthError> {
    use crate::config::RedisAuth;
    let RedisAuth::SecretArn(arn) = &redis.auth else {
        return Ok(());
    };
    let client = aws_sdk_secretsmanager::Client::new(cfg);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            AuthError(format!(
                "reading secret {arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            ))
        })?;
    let raw = out
        .secret_string
        .ok_or_else(|| AuthError(format!("secret {arn} has no string value")))?;
    redis.auth = auth_of_secret(&raw).map_err(|why| AuthError(format!("secret {arn} {why}")))?;
    Ok(())
}

/// The Redis credentials a secret's string holds: `{"username": "…",
/// "token": "…"}` (an ACL user), `{"token": "…"}` or the bare token. The
/// error says what is missing (never the token).
pub fn auth_of_secret(raw: &str) -> Result<crate::config::RedisAuth, String> {
    use crate::config::{RedisAuth, Secret};
    let serde_json::Value::Object(m) = serde_json::from_str(raw).unwrap_or_default() else {
        return Ok(RedisAuth::Token(Secret::new(raw.to_string())));
    };
    let token = m
        .get("token")
        .and_then(|t| t.as_str())
        .map(|t| Secret::new(t.to_string()))
        .ok_or("has no `token` field")?;
    Ok(match m.get("username").and_then(|u| u.as_str()) {
        Some(name) => RedisAuth::User {
            name: name.to_string(),
            password: token,
        },
        None => RedisAuth::Token(token),
    })
}

/// The Redis AUTH token could not be read (the message never holds the token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);

#[cfg(test)]
mod tests {
    use super::auth_of_secret;
    use crate::config::RedisAuth;

    #[test]
    fn a_secret_holds_a_user_a_token_or_the_bare_token() {
        let user = auth_of_secret(r#"{"username": "fs-serve", "token": "pw"}"#).unwrap();
        assert!(
            matches!(&user, RedisAuth::User { name, password } if name == "fs-serve" && password.expose() == "pw")
        );
        let token = auth_of_secret(r#"{"token": "pw"}"#).unwrap();
        assert!(matches!(&token, RedisAuth::Token(t) if t.expose() == "pw"));
        let bare = auth_of_secret("pw").unwrap();
        assert!(matches!(&bare, RedisAuth::Token(t) if t.expose() == "pw"));
        assert_eq!(
            auth_of_secret(r#"{"username": "x"}"#).unwrap_err(),
            "has no `token` field"
        );
    }
}
