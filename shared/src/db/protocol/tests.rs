use super::*;

#[test]
fn states_round_trip() {
    for s in [
        State::Ingesting,
        State::Validating,
        State::Live,
        State::Backup,
        State::RolledBack,
        State::Superseded,
        State::Held,
        State::Failed,
        State::Deleting,
    ] {
        assert_eq!(State::parse(s.as_str()), Some(s));
    }
    assert!(State::Backup.is_complete());
    assert!(!State::Ingesting.is_complete());
    assert!(!State::Failed.is_complete());
    assert!(!State::Deleting.is_complete());
    assert!(State::Held.is_complete());
}

#[test]
fn pointer_needs_version_and_buckets() {
    let mut m = HashMap::new();
    assert_eq!(pointer_from(&m), None);
    m.insert("version".to_string(), "v1".to_string());
    assert_eq!(pointer_from(&m), None);
    m.insert("buckets".to_string(), "3".to_string());
    m.insert("previous".to_string(), String::new());
    let p = pointer_from(&m).unwrap();
    assert_eq!((p.version.as_str(), p.buckets, p.previous), ("v1", 3, None));
}
