//! Loading: which file to read, the layered figment (defaults, file, environment), and the
//! steps from a figment to a usable [`Config`] (secrets, derived defaults, validation).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::{Config, ConfigError, ENV_CONFIG_FILE, ENV_PREFIX, SecretFiles};

impl Config {
    /// The file to read: `--config`, else `$MODELRELAY_CONFIG`, else `./modelrelay.toml` if present.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os(ENV_CONFIG_FILE).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let local = PathBuf::from("modelrelay.toml");
        local.exists().then_some(local)
    }

    /// Why `./modelrelay.toml` is not to be read for an admin command: found in the current
    /// directory (no `--config`, no `$MODELRELAY_CONFIG`) and another user's. The socket it
    /// names would get what the command sends — whole keys with `keys show KEY` (found by an
    /// independent check: root in another user's directory sent a key to that user's socket).
    pub fn foreign_local_file(explicit: Option<&Path>) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let local = Config::locate(explicit).filter(|p| p.is_relative() && explicit.is_none())?;
        if std::env::var_os(ENV_CONFIG_FILE).is_some_and(|p| !p.is_empty()) {
            return None;
        }
        let owner = std::fs::metadata(&local).ok()?.uid();
        let me = nix::unistd::geteuid().as_raw();
        (owner != me && owner != 0).then(|| {
            format!(
                "./{} belongs to another user (uid {owner}); an admin command does not read a \
                 configuration another user wrote in the current directory (the socket it \
                 names would get what you send). Pass it with --config if you trust it, or run \
                 the command elsewhere",
                local.display()
            )
        })
    }

    /// The layered figment: defaults, then the file (if any), then the environment.
    pub fn figment(file: Option<&Path>) -> Figment {
        Config::given(Figment::from(Serialized::defaults(Config::default())), file)
    }

    /// `fig`, then the file (if any), then the environment: what the operator wrote.
    fn given(mut fig: Figment, file: Option<&Path>) -> Figment {
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                // MODELRELAY_CONFIG names the file; it is not a key. The filter sees the
                // name before figment lowercases it.
                .filter(|k| !k.as_str().eq_ignore_ascii_case("config")),
        )
    }

    /// Where the admin socket is and which plans exist, read from the same layers as the
    /// whole configuration but only those keys: an admin command (keys, backup, the console)
    /// still reaches the daemon while the file holds a mistake elsewhere — an operator
    /// halfway through an edit, a nightly backup (found by an independent check: every admin
    /// command failed on a typo the running daemon never read). `None` when even these cannot
    /// be read (the file missing or not TOML, one of these keys of the wrong type), and when
    /// neither the file nor the environment names the socket's place (`server.data_dir` or
    /// `server.admin_socket`): a mistyped `[server]` table would otherwise send the command
    /// to the default `data/modelrelay.sock` under the working directory — another daemon,
    /// perhaps (found by an independent re-check).
    pub fn admin_reach(explicit: Option<&Path>) -> Option<(PathBuf, Vec<String>)> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Server {
            data_dir: Option<PathBuf>,
            admin_socket: Option<PathBuf>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Few {
            server: Server,
            plans: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
        }
        let file = Config::locate(explicit);
        if file.as_ref().is_some_and(|p| !p.exists()) {
            return None;
        }
        let few: Few = Config::given(Figment::new(), file.as_deref())
            .extract()
            .ok()?;
        let socket = match (few.server.admin_socket, few.server.data_dir) {
            (Some(socket), _) if !socket.as_os_str().is_empty() => socket,
            (_, Some(dir)) => dir.join("modelrelay.sock"),
            _ => return None,
        };
        let plans = if few.plans.is_empty() {
            Config::default().plans.into_keys().collect()
        } else {
            few.plans.into_keys().collect()
        };
        Some((socket, plans))
    }

    /// Load, read secret files and validate.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(explicit, SecretFiles::Read)
    }

    /// Load and validate, treating the secrets' files as `secrets` says.
    pub fn load_with(explicit: Option<&Path>, secrets: SecretFiles) -> Result<Config, ConfigError> {
        let file = Config::locate(explicit);
        if let Some(path) = &file
            && !path.exists()
        {
            return Err(ConfigError::MissingFile(path.clone()));
        }
        Config::from_figment_with(Config::figment(file.as_deref()), secrets)
    }

    /// Extract from an already-built figment (tests use this with `figment::Jail`).
    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        Config::from_figment_with(fig, SecretFiles::Read)
    }

    /// [`Config::from_figment`], treating the secrets' files as `secrets` says.
    pub fn from_figment_with(fig: Figment, secrets: SecretFiles) -> Result<Config, ConfigError> {
        let mut config: Config = fig.extract()?;
        config.resolve_secrets(secrets)?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Fill the values whose default depends on another value.
    pub(super) fn normalize(&mut self) {
        for (id, model) in &mut self.models {
            if model.upstream_model.is_empty() {
                model.upstream_model = id.clone();
            }
        }
        if self
            .server
            .admin_socket
            .as_ref()
            .is_none_or(|p| p.as_os_str().is_empty())
        {
            self.server.admin_socket = Some(self.server.data_dir.join("modelrelay.sock"));
        }
        if self
            .server
            .admin_group
            .as_ref()
            .is_some_and(|g| g.is_empty())
        {
            self.server.admin_group = None;
        }
        if self
            .server
            .secret_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.server.secret_file = None;
        }
        self.server.public_url = self.server.public_url.trim_end_matches('/').to_string();
        self.upstream.base_url = self.upstream.base_url.trim_end_matches('/').to_string();
    }
}
