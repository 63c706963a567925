//! Waiting for the system to reach a state: every wait has a deadline and,
//! when it passes, fails with what it last saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok`, and returns that; past `timeout`,
/// panics naming `what` and the last `Err` it saw.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_every(POLL, what, timeout, probe).await
}

/// [`eventually`], looking again every `poll`.
pub async fn eventually_every<T, E, F, Fut>(
    poll: Duration,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last saw: {seen:?}")
            }
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
}

/// `Ok(())` when `condition` holds, else `Err(seen)`: for [`eventually`]
/// probes whose answer is a yes or no.
pub fn check<S>(condition: bool, seen: S) -> Result<(), S> {
    if condition {
        Ok(())
    } else {
        Err(seen)
    }
}
