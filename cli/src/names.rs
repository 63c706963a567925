//! Version names as operators type and read them.
//!
//! Version ids are long (event time, a 32-digit hash, a suffix: 62
//! characters), so every command that takes a version also takes any prefix
//! of one that names a single version of the dataset, as git takes commit
//! ids, or a relative name: `live`, or `previous` (the newest retained
//! backup, where `fsctl rollback` goes by default). Lists print each version
//! as a short prefix ([`Shortener`]), which the same commands accept.

use anyhow::{bail, Context, Result};
use shared::db::protocol::{self, State};
use shared::db::store::Redis;

use crate::view;

/// Shortest printed form: the event time to the millisecond, a dash, and 7
/// digits of the hash.
pub const SHORT_LEN: usize = 27;

/// The version `fsctl rollback` goes back to by default: the newest retained
/// backup (or version rolled back from) that is not live.
fn previous<'a>(all: &[(&'a str, State)], live: Option<&str>) -> Option<&'a str> {
    all.iter()
        .find(|(v, state)| matches!(state, State::Backup | State::RolledBack) && Some(*v) != live)
        .map(|(v, _)| *v)
}

/// The one version of `all` (a dataset's versions and their states, newest
/// first) that `name` names: `live`, `previous`, a whole id or a prefix of
/// exactly one.
pub fn pick(name: &str, all: &[(&str, State)], live: Option<&str>) -> Result<String> {
    match name {
        "live" => {
            return live
                .map(str::to_string)
                .context("the dataset has no live version")
        }
        "previous" => {
            return previous(all, live)
                .map(str::to_string)
                .context("the dataset has no retained backup version to go back to")
        }
        _ => {}
    }
    if let Some((v, _)) = all.iter().find(|(v, _)| *v == name) {
        return Ok(v.to_string());
    }
    let matching: Vec<&str> = all
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| v.starts_with(name))
        .collect();
    match matching.as_slice() {
        [] => bail!("no version starts with {name:?} (see fsctl versions)"),
        [one] => Ok(one.to_string()),
        many => {
            let short = Shortener::new(many.iter().copied());
            let listed: Vec<&str> = many.iter().take(5).map(|v| short.short(v)).collect();
            bail!(
                "{name:?} starts {} versions ({}{}): give more of it",
                many.len(),
                listed.join(", "),
                if many.len() > 5 { ", …" } else { "" }
            )
        }
    }
}

/// [`pick`] against what Redis holds for `dataset` now.
pub async fn resolve(redis: &Redis, dataset: &str, name: &str) -> Result<String> {
    let all = view::versions(redis, dataset).await?;
    let all: Vec<(&str, State)> = all.iter().map(|v| (v.version.as_str(), v.state)).collect();
    let live = protocol::Dataset::new(redis, dataset)?
        .live()
        .await?
        .map(|p| p.version);
    pick(name, &all, live.as_deref()).with_context(|| format!("dataset {dataset}"))
}

/// Prints versions of one list as the shortest prefixes, of at least
/// [`SHORT_LEN`] characters, that still tell each from every other.
pub struct Shortener {
    len: usize,
}

impl Shortener {
    pub fn new<'a>(versions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut sorted: Vec<&str> = versions.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        // Neighbours in sorted order share the longest prefixes.
        let shared = sorted
            .windows(2)
            .map(|w| {
                w[0].bytes()
                    .zip(w[1].bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0);
        Shortener {
            len: SHORT_LEN.max(shared + 1),
        }
    }

    /// Every version, in full.
    pub fn full() -> Self {
        Shortener { len: usize::MAX }
    }

    pub fn short<'a>(&self, version: &'a str) -> &'a str {
        version.get(..self.len).unwrap_or(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "20261204T101500000Z-0123456789abcdef0123456789abcdef-00000001";
    const B: &str = "20261204T101500000Z-0123456fffffffff0123456789abcdef-00000001";
    const C: &str = "20261203T090000000Z-fedcba9876543210fedcba9876543210-00000001";

    #[test]
    fn names_pick_one_version_or_say_why_not() {
        let all = [(A, State::Live), (B, State::Failed), (C, State::Backup)];
        assert_eq!(pick("live", &all, Some(A)).unwrap(), A);
        assert_eq!(pick("previous", &all, Some(A)).unwrap(), C);
        assert_eq!(pick(C, &all, Some(A)).unwrap(), C);
        assert_eq!(pick("20261203", &all, Some(A)).unwrap(), C);
        let e = pick("20261204T1015", &all, Some(A))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("starts 2 versions") && e.contains(&A[..28]) && e.contains(&B[..28]),
            "{e}"
        );
        assert!(pick("2025", &all, Some(A))
            .unwrap_err()
            .to_string()
            .contains("no version starts with"));
        assert!(pick("live", &all, None).is_err());
        assert!(pick("previous", &[(A, State::Live)], Some(A)).is_err());
    }

    #[test]
    fn short_forms_are_unique_prefixes_the_commands_take() {
        let s = Shortener::new([A, C]);
        assert_eq!((s.short(A), s.short(C)), (&A[..SHORT_LEN], &C[..SHORT_LEN]));
        // A and B share 27 characters: one more tells them apart.
        let s = Shortener::new([A, B, C]);
        assert_eq!(s.short(A).len(), 28);
        let all = [(A, State::Live), (B, State::Failed), (C, State::Backup)];
        for v in [A, B, C] {
            assert_eq!(pick(s.short(v), &all, None).unwrap(), v);
        }
        assert_eq!(Shortener::full().short(A), A);
        assert_eq!(Shortener::new(["short"]).short("short"), "short");
    }
}
