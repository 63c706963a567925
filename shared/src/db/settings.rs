//! What an operator sets for one dataset, kept beside its pointer: today the
//! maximum age of its live batch, which overrides `FS_MAX_AGE_S` for that
//! dataset. Serve reads it with the pointer, so a change is seen within the
//! pointer cache's TTL.

use std::time::Duration;

use redis::AsyncCommands;

use super::store::Redis;
use crate::keys::DatasetKeys;

const MAX_AGE_S: &str = "max_age_s";

/// A dataset's own maximum age, if it has one. `Some(None)`: set to no limit.
pub async fn max_age(
    conn: &Redis,
    keys: &DatasetKeys,
) -> redis::RedisResult<Option<Option<Duration>>> {
    let raw: Option<u64> = conn.clone().hget(keys.settings(), MAX_AGE_S).await?;
    Ok(raw.map(|s| (s > 0).then(|| Duration::from_secs(s))))
}

/// Sets the dataset's maximum age (`Some(None)`: no limit, whatever
/// `FS_MAX_AGE_S` says), or removes it (`None`: the default applies).
pub async fn set_max_age(
    conn: &Redis,
    keys: &DatasetKeys,
    max_age: Option<Option<Duration>>,
) -> redis::RedisResult<()> {
    let mut conn = conn.clone();
    match max_age {
        Some(age) => {
            conn.hset(keys.settings(), MAX_AGE_S, age.map_or(0, |d| d.as_secs()))
                .await
        }
        None => conn.hdel(keys.settings(), MAX_AGE_S).await,
    }
}
