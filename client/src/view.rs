//! What a read asks for besides the users: which part of each list
//! ([`Select`]), which fields ([`View`]), and the ids of a batch as the
//! caller wrote them ([`BatchId`]). Checked here once for every path in:
//! the HTTP API's parameters and a library caller's arguments.

use std::collections::HashSet;
use std::num::NonZeroU32;

use serde_json::Value;
use shared::record::validate_user_id;

use crate::Error;

/// Most names one `fields` projection may list.
pub const MAX_FIELDS: usize = 64;

/// Which part of each user's record to return.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub select: Select,
    /// Only these fields (`items` is the item list); `None`: every field.
    pub fields: Option<Vec<String>>,
}

impl View {
    /// A view of `select`, with the fields projected to `fields` (checked
    /// by [`field_names`]) when given.
    pub fn new<'a>(
        select: Select,
        fields: Option<impl IntoIterator<Item = &'a str>>,
    ) -> Result<Self, Error> {
        let fields = fields.map(|f| field_names(f.into_iter())).transpose()?;
        Ok(View { select, fields })
    }

    pub(crate) fn wants(&self, field: &str) -> bool {
        self.fields
            .as_ref()
            .is_none_or(|f| f.iter().any(|n| n == field))
    }
}

/// Which part of a user's list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select {
    #[default]
    All,
    /// The one item at this rank (1 is the first).
    Rank(NonZeroU32),
    /// The first this many items.
    Limit(NonZeroU32),
}

impl Select {
    /// From a rank or a limit, not both; each at least 1.
    pub fn of(rank: Option<u64>, limit: Option<u64>) -> Result<Self, Error> {
        let positive = |name: &str, n: u64| {
            u32::try_from(n)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "{name} must be a whole number from 1 to {}",
                        u32::MAX
                    ))
                })
        };
        match (rank, limit) {
            (Some(_), Some(_)) => Err(Error::bad_request("give either rank or limit, not both")),
            (Some(r), None) => Ok(Select::Rank(positive("rank", r)?)),
            (None, Some(l)) => Ok(Select::Limit(positive("limit", l)?)),
            (None, None) => Ok(Select::All),
        }
    }
}

/// A projection's field names: at least one, at most [`MAX_FIELDS`], each
/// a short printable name; repeats dropped.
pub fn field_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for name in names {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::bad_request(format!(
                "fields: {:?} is not a field name",
                short(name)
            )));
        }
        if seen.insert(name.to_string()) {
            out.push(name.to_string());
        }
    }
    match out.len() {
        0 => Err(Error::bad_request("fields lists no field")),
        n if n > MAX_FIELDS => Err(Error::bad_request(format!(
            "fields lists {n} names; at most {MAX_FIELDS}"
        ))),
        _ => Ok(out),
    }
}

/// One id of a batch read: the id, and how the caller wrote it (a JSON
/// number or string), echoed for a user the version does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchId {
    pub id: String,
    pub given: Value,
}

impl BatchId {
    /// A string id, checked.
    pub fn text(id: &str) -> Result<Self, Error> {
        validate_user_id(id).map_err(|e| Error::bad_request(format!("user id: {e}")))?;
        Ok(BatchId {
            id: id.to_string(),
            given: Value::from(id),
        })
    }

    /// A whole-number id (`3` and `"3"` are the same user).
    pub fn number(id: i64) -> Self {
        BatchId {
            id: id.to_string(),
            given: Value::from(id),
        }
    }

    /// The ids, each once: a repeated id keeps its first place, so one
    /// request cannot make the reader send one record many times over.
    pub fn dedup(users: Vec<BatchId>) -> Vec<BatchId> {
        // Kept or not, decided over borrowed ids: no id is copied.
        let mut seen = HashSet::with_capacity(users.len());
        let first: Vec<bool> = users.iter().map(|u| seen.insert(u.id.as_str())).collect();
        drop(seen);
        let mut first = first.into_iter();
        let mut users = users;
        users.retain(|_| first.next().unwrap_or(false));
        users
    }
}

/// At most 40 characters of what a caller sent, for a message.
pub fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}
