//! Docker's credential helper protocol with a real helper program: a `docker-credential-*`
//! script on `PATH` that keeps credentials in a file, used through `credsStore` for login,
//! lookup and logout. (Its own test binary: it changes `PATH` for the process.)
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use rbuild_registry::{Credentials, DockerConfig};

/// `get` prints the stored JSON for the server on stdin, or says "credentials not found";
/// `store` keeps the JSON from stdin; `erase` forgets it.
const HELPER: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
case "$1" in
  store) cat > "$dir/stored.json" ;;
  get)
    server="$(cat)"
    if [ -f "$dir/stored.json" ] && grep -q "\"ServerURL\":\"$server\"" "$dir/stored.json"; then
      cat "$dir/stored.json"
    else
      echo "credentials not found in native keychain"; exit 1
    fi ;;
  erase)
    cat > /dev/null
    if [ -f "$dir/stored.json" ]; then rm "$dir/stored.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 2 ;;
esac
"#;

#[test]
fn login_lookup_and_logout_through_a_credential_helper() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-rbuildtest");
    fs::write(&helper, HELPER).unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.clone()];
    paths.extend(std::env::split_paths(&path));
    // This test binary has this one test: no other thread reads PATH while it changes.
    std::env::set_var("PATH", std::env::join_paths(paths).unwrap());

    let config_path = dir.path().join("config.json");
    fs::write(&config_path, r#"{"credsStore":"rbuildtest"}"#).unwrap();
    let config = DockerConfig::at(&config_path);
    assert_eq!(config.credentials_for("reg.example:5000").unwrap(), None);

    config
        .store_login("reg.example:5000", "carol", "pw")
        .unwrap();
    assert!(bin.join("stored.json").exists());
    // Nothing secret went into config.json.
    assert!(!fs::read_to_string(&config_path).unwrap().contains("auths"));
    assert_eq!(
        config.credentials_for("reg.example:5000").unwrap(),
        Some(Credentials::Basic {
            username: "carol".into(),
            password: "pw".into()
        })
    );
    assert_eq!(config.credentials_for("other.example").unwrap(), None);

    assert!(config.remove_login("reg.example:5000").unwrap());
    assert_eq!(config.credentials_for("reg.example:5000").unwrap(), None);
    assert!(!config.remove_login("reg.example:5000").unwrap());
}
