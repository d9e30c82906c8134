//! The cookie jar on disk: persistent cookies round-trip, expired and session cookies do not.

use consent_store::Store;
use url::Url;

fn url() -> Url {
    Url::parse("https://edge.example.com/ee/v1/interact").unwrap()
}

#[test]
fn persistent_cookies_round_trip_and_session_cookies_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let jar = store.cookie_jar();
    let mut cookies = jar.load().unwrap();
    assert_eq!(cookies.iter_any().count(), 0);
    cookies
        .parse(
            "kndctr_ORG_AdobeOrg_consent=general=in; Max-Age=15552000; Path=/",
            &url(),
        )
        .unwrap();
    cookies
        .parse(
            "kndctr_ORG_AdobeOrg_cluster=or2; Max-Age=1800; Path=/",
            &url(),
        )
        .unwrap();
    cookies.parse("session=1; Path=/", &url()).unwrap();
    jar.save(&cookies).unwrap();
    // A restart: the first store (and the jar holding its lock) is gone before the next opens.
    drop(jar);
    drop(store);

    let loaded = Store::open(dir.path())
        .unwrap()
        .cookie_jar()
        .load()
        .unwrap();
    let consent = loaded
        .get("edge.example.com", "/", "kndctr_ORG_AdobeOrg_consent")
        .unwrap();
    assert_eq!(consent.value(), "general=in");
    assert!(
        loaded
            .get("edge.example.com", "/", "kndctr_ORG_AdobeOrg_cluster")
            .is_some()
    );
    assert!(loaded.get("edge.example.com", "/", "session").is_none());
    assert!(!dir.path().join("cookies.json.tmp").exists());
}

#[test]
fn expired_cookies_are_dropped_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // What a jar saved in 2000 looks like when read today: one cookie expired since, one not.
    let saved = r#"[
  {"raw_cookie": "old=1; Path=/; Expires=Thu, 03 Aug 2000 00:38:37 GMT", "path": ["/", true],
   "domain": {"HostOnly": "edge.example.com"}, "expires": {"AtUtc": "2000-08-03T00:38:37Z"}},
  {"raw_cookie": "new=2; Path=/; Expires=Tue, 03 Aug 2100 00:38:37 GMT", "path": ["/", true],
   "domain": {"HostOnly": "edge.example.com"}, "expires": {"AtUtc": "2100-08-03T00:38:37Z"}}
]
"#;
    std::fs::write(store.cookie_jar().path(), saved).unwrap();
    let loaded = store.cookie_jar().load().unwrap();
    assert_eq!(loaded.iter_any().count(), 1);
    assert!(loaded.get("edge.example.com", "/", "new").is_some());
}

#[test]
fn a_corrupt_jar_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    std::fs::write(store.cookie_jar().path(), b"[{\"raw_cookie\": ").unwrap();
    assert!(matches!(
        store.cookie_jar().load(),
        Err(consent_store::LoadCookiesError::Corrupt { .. })
    ));
}
