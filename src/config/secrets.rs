//! Secrets: reading the `*_file` variants of the API key, the PayPal secret and the SMTP URL,
//! and the redacted rendering of the configuration that `check-config` prints.

use std::path::PathBuf;

use super::{Config, ConfigError};

impl Config {
    /// Replace each secret by the trimmed content of its `*_file`, refusing both at once.
    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut read = |key: &'static str,
                        path: &Option<PathBuf>,
                        inline: &mut String,
                        inline_key: &str|
         -> Result<(), ConfigError> {
            let Some(path) = path else { return Ok(()) };
            if !inline.is_empty() {
                errors.push(format!("set {inline_key} or {key}, not both"));
                return Ok(());
            }
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key,
                path: path.clone(),
                source,
            })?;
            *inline = text.trim().to_string();
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
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "upstream.accounts.api_key_file",
                path: path.clone(),
                source,
            })?;
            a.api_key = text.trim().to_string();
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The effective configuration as TOML, with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        let accounts = c.upstream.accounts.iter_mut().map(|a| &mut a.api_key);
        for secret in [
            &mut c.upstream.api_key,
            &mut c.paypal.client_secret,
            &mut c.email.smtp_url,
        ]
        .into_iter()
        .chain(accounts)
        {
            if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}
