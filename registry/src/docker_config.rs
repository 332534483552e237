//! Docker's client config file (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) as
//! far as registries go: credentials in `auths` (base64 `user:password` in `auth`, or
//! `username`/`password`, or an `identitytoken`), and credential helpers in `credHelpers`
//! (per registry) and `credsStore` (for every other registry). Login and logout change only
//! their registry's entry and keep everything else in the file as it was; the file is
//! replaced atomically and kept mode 0600.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cred_helper::CredentialHelper;
use crate::credentials::{decode_basic_auth, encode_basic_auth, Credentials};
use crate::endpoint::{auth_key, normalize_server};
use crate::error::RegistryError;

/// The most a config file may be.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The parts of `config.json` that hold credentials.
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
}

/// One `auths` entry.
#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthEntry {
    fn credentials(&self) -> Option<Credentials> {
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Some(Credentials::IdentityToken(token.clone()));
        }
        if let Some(auth) = self.auth.as_ref().filter(|a| !a.is_empty()) {
            return decode_basic_auth(auth);
        }
        match (&self.username, &self.password) {
            (Some(username), Some(password)) if !username.is_empty() => Some(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }
}

/// Docker's config file at a path (which need not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    path: PathBuf,
}

impl DockerConfig {
    /// The config file Docker uses: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`; `None` without either variable.
    pub fn from_env() -> Option<DockerConfig> {
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".docker")
            }
        };
        Some(DockerConfig::at(dir.join("config.json")))
    }

    /// The config file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> DockerConfig {
        DockerConfig { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for the registry `registry` (in reference form: `docker.io`,
    /// `host:5000`): from its credential helper if one is configured, else from `auths`.
    pub fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let registry = normalize_server(registry);
        let file = self.read_typed()?;
        if let Some(helper) = helper_for(&file, &registry)? {
            return helper.get(&auth_key(&registry));
        }
        Ok(file
            .auths
            .iter()
            .find(|(key, _)| normalize_server(key) == registry)
            .and_then(|(_, entry)| entry.credentials()))
    }

    /// Saves a login for `registry`, as `docker login` does: with its credential helper if one
    /// is configured, else as `auths[key].auth`.
    pub fn store_login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        let registry = normalize_server(registry);
        let key = auth_key(&registry);
        if let Some(helper) = helper_for(&self.read_typed()?, &registry)? {
            return helper.store(&key, username, password);
        }
        let mut document = self.read_document()?;
        let auths = auths_of(&mut document, &self.path)?;
        remove_entries_for(auths, &registry);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(encode_basic_auth(username, password)),
        );
        auths.insert(key, Value::Object(entry));
        self.write_document(&document)
    }

    /// Forgets the login for `registry` (its helper's and its `auths` entries); `false` if
    /// there was none.
    pub fn remove_login(&self, registry: &str) -> Result<bool, RegistryError> {
        let registry = normalize_server(registry);
        let mut removed = false;
        if let Some(helper) = helper_for(&self.read_typed()?, &registry)? {
            removed |= helper.erase(&auth_key(&registry))?;
        }
        if !self.path.exists() {
            return Ok(removed);
        }
        let mut document = self.read_document()?;
        let auths = auths_of(&mut document, &self.path)?;
        if remove_entries_for(auths, &registry) {
            self.write_document(&document)?;
            removed = true;
        }
        Ok(removed)
    }

    fn read_bytes(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        let shown = || self.path.display().to_string();
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RegistryError::io(shown(), e)),
        };
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(RegistryError::Credentials(format!(
                "{} is larger than {MAX_CONFIG_BYTES} bytes",
                shown()
            )));
        }
        fs::read(&self.path)
            .map(Some)
            .map_err(|e| RegistryError::io(shown(), e))
    }

    fn invalid(&self, e: serde_json::Error) -> RegistryError {
        RegistryError::Credentials(format!("{}: invalid JSON: {e}", self.path.display()))
    }

    fn read_typed(&self) -> Result<ConfigFile, RegistryError> {
        match self.read_bytes()? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.invalid(e)),
            None => Ok(ConfigFile::default()),
        }
    }

    fn read_document(&self) -> Result<Value, RegistryError> {
        match self.read_bytes()? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.invalid(e)),
            None => Ok(Value::Object(Map::new())),
        }
    }

    /// Writes `document` to a temp file beside the config (mode 0600), then renames it over.
    fn write_document(&self, document: &Value) -> Result<(), RegistryError> {
        let shown = self.path.display().to_string();
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| RegistryError::io(dir.display().to_string(), e))?;
        let mut bytes = serde_json::to_vec_pretty(document).map_err(|e| self.invalid(e))?;
        bytes.push(b'\n');
        let temp = dir.join(format!(".config.json.rbuild-{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(RegistryError::io(shown, e));
        }
        Ok(())
    }
}

/// The credential helper configured for `registry`, if any.
fn helper_for(
    file: &ConfigFile,
    registry: &str,
) -> Result<Option<CredentialHelper>, RegistryError> {
    let specific = file
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize_server(key) == registry)
        .map(|(_, helper)| helper.as_str());
    match specific
        .or(file.creds_store.as_deref())
        .filter(|h| !h.is_empty())
    {
        Some(name) => CredentialHelper::new(name).map(Some),
        None => Ok(None),
    }
}

/// The `auths` object of `document` (a JSON object), made one if it is missing or is not.
fn auths_of<'a>(
    document: &'a mut Value,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, RegistryError> {
    let not_object =
        || RegistryError::Credentials(format!("{}: not a JSON object", path.display()));
    let Value::Object(root) = document else {
        return Err(not_object());
    };
    let auths = root
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    match auths {
        Value::Object(map) => Ok(map),
        _ => Err(not_object()),
    }
}

/// Removes every entry whose key names `registry`; whether there was one.
fn remove_entries_for(auths: &mut Map<String, Value>, registry: &str) -> bool {
    let keys: Vec<String> = auths
        .keys()
        .filter(|key| normalize_server(key) == registry)
        .cloned()
        .collect();
    for key in &keys {
        auths.remove(key);
    }
    !keys.is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn login_logout_keep_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker/config.json");
        let config = DockerConfig::at(&path);
        assert_eq!(config.credentials_for("127.0.0.1:5000").unwrap(), None);
        assert!(!config.remove_login("127.0.0.1:5000").unwrap());

        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            r#"{"auths":{"other.example":{"auth":"dTpw"}},"psFormat":"table"}"#,
        )
        .unwrap();
        config
            .store_login("127.0.0.1:5000", "alice", "s3cret")
            .unwrap();
        config.store_login("docker.io", "bob", "pw").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let document: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(document["psFormat"], "table");
        assert!(document["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        assert_eq!(
            config.credentials_for("127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            config
                .credentials_for("index.docker.io")
                .unwrap()
                .unwrap()
                .username(),
            Some("bob")
        );
        assert_eq!(
            config
                .credentials_for("other.example")
                .unwrap()
                .unwrap()
                .username(),
            Some("u")
        );

        assert!(config.remove_login("127.0.0.1:5000").unwrap());
        assert_eq!(config.credentials_for("127.0.0.1:5000").unwrap(), None);
        assert!(config.credentials_for("other.example").unwrap().is_some());
    }

    #[test]
    fn keys_with_schemes_and_identity_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"auths":{"https://reg.example:5000/v2/":{"identitytoken":"tok"},
                "http://plain.example":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let config = DockerConfig::at(&path);
        assert_eq!(
            config.credentials_for("reg.example:5000").unwrap(),
            Some(Credentials::IdentityToken("tok".into()))
        );
        assert_eq!(
            config
                .credentials_for("plain.example")
                .unwrap()
                .unwrap()
                .username(),
            Some("u")
        );
    }

    #[test]
    fn a_configured_helper_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"credHelpers":{"reg.example":"rbuild-test-absent"}}"#,
        )
        .unwrap();
        let config = DockerConfig::at(&path);
        assert!(config.credentials_for("reg.example").is_err());
        assert_eq!(config.credentials_for("other.example").unwrap(), None);
    }

    #[test]
    fn invalid_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "{not json").unwrap();
        let error = DockerConfig::at(&path)
            .credentials_for("x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("config.json"), "{error}");
    }
}
