//! Secrets: reading the `*_file` variants of the API key, the PayPal secret and the SMTP URL,
//! and the redacted rendering of the configuration that `check-config` prints.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// What loading the configuration does with the secrets' `*_file`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFiles {
    /// Read each one; one that cannot be read is an error (`serve`).
    Read,
    /// Read each one, but one under systemd's credentials directory that cannot be read yet
    /// is a warning (`check-config`: before the service's first start that directory does
    /// not exist, and once it runs only the service's user may read it).
    Check,
    /// Leave them unread (the admin commands, which talk to the daemon and need none of them;
    /// under systemd they are the service's alone).
    Skip,
    /// Read the mail server's alone (`serve --demo`, which brings its own DeepSeek and PayPal:
    /// a real config whose DeepSeek key file only the service may read was refused).
    Demo,
}

/// `url` with the user and password it may carry (`https://user:pass@host/`) redacted.
pub(super) fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// What `check-config` puts in place of a systemd credential it cannot read: set, and shaped
/// to pass every check a real value must pass (an SMTP URL's scheme, a header-safe key).
pub(super) const UNREAD_PLACEHOLDER: &str = "smtps://systemd-credential.invalid";

/// Where systemd's `LoadCredential=` puts a service's credentials.
const SYSTEMD_CREDENTIALS: &str = "/run/credentials/";

impl Config {
    /// Replace each secret by the trimmed content of its `*_file`, refusing both at once.
    pub(super) fn resolve_secrets(&mut self, mode: SecretFiles) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut unread = Vec::new();
        // The file's trimmed text; `None` when the mode leaves it unread (`Skip`: not even
        // opened). A systemd credential `check-config` cannot reach stands in as a placeholder
        // that passes for a set secret, so the rest is checked as `serve` will check it.
        let mut text_of = |key: &str, path: &Path| -> Result<Option<String>, ConfigError> {
            if mode == SecretFiles::Skip
                || (mode == SecretFiles::Demo && key != "email.smtp_url_file")
            {
                return Ok(None);
            }
            match std::fs::read_to_string(path) {
                // A byte-order mark (Notepad's) is not part of the secret.
                Ok(text) => match text.trim_start_matches('\u{feff}').trim() {
                    "" => Err(ConfigError::EmptySecretFile {
                        key: key.to_string(),
                        path: path.to_path_buf(),
                    }),
                    secret => Ok(Some(secret.to_string())),
                },
                Err(e)
                    if mode == SecretFiles::Check
                        && path.starts_with(SYSTEMD_CREDENTIALS)
                        && !path
                            .components()
                            .any(|c| c == std::path::Component::ParentDir)
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                        ) =>
                {
                    unread.push(format!(
                        "{key} = {} cannot be read from here: systemd hands it to the service \
                         when it starts (LoadCredential=); `serve` refuses to start if it still \
                         cannot read it",
                        path.display()
                    ));
                    Ok(Some(UNREAD_PLACEHOLDER.to_string()))
                }
                Err(source) => Err(ConfigError::SecretFile {
                    key: key.to_string(),
                    path: path.to_path_buf(),
                    source,
                }),
            }
        };
        let mut read = |key: &'static str,
                        path: &Option<PathBuf>,
                        inline: &mut String,
                        inline_key: &str|
         -> Result<(), ConfigError> {
            let Some(path) = path else { return Ok(()) };
            if !inline.is_empty() {
                // The inline value may have come from the environment, not the file.
                let env = format!(
                    "{}{}",
                    super::ENV_PREFIX,
                    inline_key.replace('.', "__").to_uppercase()
                );
                errors.push(format!(
                    "set {inline_key} or {key}, not both ({inline_key} may come from {env})"
                ));
                return Ok(());
            }
            if let Some(text) = text_of(key, path)? {
                *inline = text;
            }
            Ok(())
        };
        read(
            "upstream.api_key_file",
            &self.upstream.api_key_file,
            &mut self.upstream.api_key,
            "upstream.api_key",
        )?;
        read(
            "paypal.client_secret_file",
            &self.paypal.client_secret_file,
            &mut self.paypal.client_secret,
            "paypal.client_secret",
        )?;
        read(
            "email.smtp_url_file",
            &self.email.smtp_url_file,
            &mut self.email.smtp_url,
            "email.smtp_url",
        )?;
        for a in &mut self.upstream.accounts {
            let Some(path) = &a.api_key_file else {
                continue;
            };
            if !a.api_key.is_empty() {
                errors.push(format!(
                    "upstream.accounts {:?}: set api_key or api_key_file, not both",
                    a.name
                ));
                continue;
            }
            let key = format!("upstream.accounts {:?} api_key_file", a.name);
            if let Some(text) = text_of(&key, path)? {
                a.api_key = text;
            }
        }
        self.unread_secrets = unread;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The effective configuration as TOML, with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        let accounts = c
            .upstream
            .accounts
            .iter_mut()
            .map(|a| (&mut a.api_key, a.api_key_file.is_some()));
        for (secret, from_file) in [
            (&mut c.upstream.api_key, c.upstream.api_key_file.is_some()),
            (
                &mut c.paypal.client_secret,
                c.paypal.client_secret_file.is_some(),
            ),
            (&mut c.email.smtp_url, c.email.smtp_url_file.is_some()),
        ]
        .into_iter()
        .chain(accounts)
        {
            // A secret read from its file is shown as the file alone: the value next to it
            // made the printed config one `serve` refuses ("not both"; found by an
            // independent check).
            if from_file {
                secret.clear();
            } else if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        let urls = c.upstream.accounts.iter_mut().map(|a| &mut a.base_url);
        for url in [&mut c.upstream.base_url, &mut c.paypal.api_base]
            .into_iter()
            .chain(urls)
        {
            *url = without_userinfo(url);
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::without_userinfo;

    #[test]
    fn userinfo_in_urls_is_redacted() {
        assert_eq!(
            without_userinfo("https://user:hunter2@proxy.example/v1?x=a@b"),
            "https://<redacted>@proxy.example/v1?x=a@b"
        );
        assert_eq!(
            without_userinfo("https://api.deepseek.com/v1?x=a@b"),
            "https://api.deepseek.com/v1?x=a@b"
        );
        assert_eq!(without_userinfo("not a url"), "not a url");
        assert_eq!(
            without_userinfo("http://a:b@c@host"),
            "http://<redacted>@host"
        );
    }
}
