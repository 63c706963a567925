//! A delta's records: an upsert, or a tombstone that deletes its user.

use shared::record::RecordError;

/// What a delta's record is.
#[derive(Debug, PartialEq)]
pub(super) enum Tombstone {
    /// An upsert: it has no `_delete` field.
    No,
    /// `"_delete": true`: delete this user.
    Delete(String),
    /// `"_delete": false`: an upsert, the record without the field.
    Keep(String),
    Bad(RecordError),
}

/// The field that makes a delta's record a tombstone.
pub const DELETE_FIELD: &str = "_delete";

/// Tells a delta's tombstone (`{"<user field>": 5, "_delete": true}`) from
/// an upsert, by one substring search for the common case.
pub(super) fn tombstone(text: &str, user_field: &str) -> Tombstone {
    if memchr::memmem::find(text.as_bytes(), format!("\"{DELETE_FIELD}\"").as_bytes()).is_none() {
        return Tombstone::No;
    }
    let Ok(mut record) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
    else {
        return Tombstone::No;
    };
    match record.remove(DELETE_FIELD) {
        None => Tombstone::No,
        Some(serde_json::Value::Bool(false)) => {
            Tombstone::Keep(serde_json::Value::Object(record).to_string())
        }
        Some(serde_json::Value::Bool(true)) => {
            let user = match record.get(user_field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                Some(_) => {
                    return Tombstone::Bad(RecordError::BadUserIdType(user_field.to_string()))
                }
                None => return Tombstone::Bad(RecordError::MissingUserId(user_field.to_string())),
            };
            match shared::record::validate_user_id(&user) {
                Ok(()) => Tombstone::Delete(user),
                Err(e) => Tombstone::Bad(RecordError::BadUserId(e)),
            }
        }
        Some(_) => Tombstone::Bad(RecordError::BadTombstone(DELETE_FIELD.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_records_are_upserts_or_tombstones() {
        assert_eq!(
            tombstone(r#"{"userId": 1, "movieId": [2]}"#, "userId"),
            Tombstone::No
        );
        assert_eq!(
            tombstone(r#"{"userId": 5, "_delete": true}"#, "userId"),
            Tombstone::Delete("5".into())
        );
        assert_eq!(
            tombstone(r#"{"_delete": true, "userId": "u-5"}"#, "userId"),
            Tombstone::Delete("u-5".into())
        );
        assert_eq!(
            tombstone(
                r#"{"userId": 5, "_delete": false, "movieId": [1]}"#,
                "userId"
            ),
            Tombstone::Keep(r#"{"userId":5,"movieId":[1]}"#.into())
        );
        assert!(matches!(
            tombstone(r#"{"userId": 5, "_delete": "yes"}"#, "userId"),
            Tombstone::Bad(_)
        ));
        assert!(matches!(
            tombstone(r#"{"_delete": true}"#, "userId"),
            Tombstone::Bad(RecordError::MissingUserId(_))
        ));
        assert!(matches!(
            tombstone(r#"{"userId": 1.5, "_delete": true}"#, "userId"),
            Tombstone::Bad(_)
        ));
        // A user whose field merely mentions the word is an upsert.
        assert_eq!(
            tombstone(r#"{"userId": 1, "movieId": ["_delete"]}"#, "userId"),
            Tombstone::No
        );
    }
}
