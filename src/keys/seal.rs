//! Sealing keys at rest: XChaCha20-Poly1305 with a server secret kept outside the database,
//! so a copy of the database alone reveals no key, yet `/order` can show a paid key again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

/// Why the secret cannot be loaded or a sealed key cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or creating the secret file failed.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret file holds something other than 64 hex characters.
    #[error("secret file {0} must hold 64 hex characters (32 bytes)")]
    BadSecret(PathBuf),
    /// The secret file is empty: never written (an earlier version's first start on a full
    /// disk left it so), so no key can have been sealed with it.
    #[error(
        "secret file {0} is empty: it was never written (a first start that failed, e.g. on a \
         full disk) — delete it and start again to have a new one made — or it was emptied: \
         then, if the database holds keys, put back the secret from your backup"
    )]
    EmptySecret(PathBuf),
    /// The secret file is missing while the database holds keys sealed with a secret: a new
    /// one made in its place (as a first start does) seals new keys with it, and the old one
    /// put back later would not open those (found by an independent check of a restore).
    #[error(
        "secret file {path} is missing, but the database holds {keys} key{} sealed with it: put \
         it back (from your backup of the data directory){}. If it is lost for good, make a new \
         one to go on — `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {path}; chmod 600 \
         {path}`, owned by the service's user (`chown modelrelay:modelrelay {path}` under the \
         unit) — and the order look-up will no longer show the keys sold before",
        if *keys == 1 { "" } else { "s" },
        elsewhere.as_ref().map(|o| format!(
            " — or, if it is the one at {} (the data directory's own, which `server.secret_file` \
             replaces), set `server.secret_file` to that path or remove the setting",
            o.display()
        )).unwrap_or_default()
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// Keys in the database.
        keys: usize,
        /// A secret file that exists where the data directory keeps one, when the config names
        /// another (a mistyped `server.secret_file`: making a new secret, as the message says
        /// to do when the old one is lost, would have been the wrong fix; found by an
        /// independent check).
        elsewhere: Option<PathBuf>,
    },
    /// The OS RNG failed.
    #[error("random number generator failed: {0}")]
    Rng(String),
    /// Authentication failed: wrong secret, or the sealed bytes were altered.
    #[error("sealed key does not open with this server's secret")]
    Open,
    /// Encryption failed (cannot happen with valid inputs).
    #[error("sealing failed")]
    Seal,
}

/// Seals and opens API keys with the server secret.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// A key of its own for [`Sealer::tag`], derived from the secret.
    tag_key: [u8; 32],
}

/// Warn when others may read the secret (a file copied in with the umask's 0644): whoever
/// reads it and a copy of the database can show every sold key.
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the secret that seals the keys is readable by others; chmod 600 it"
        );
    }
}

/// Create `path` (mode 0600) holding `bytes`, whole or not at all: written and synced under a
/// temporary name, then linked in place (which fails if `path` exists). A first start that
/// failed half-way (a full disk) left an empty secret that refused every later start.
fn create_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

impl Sealer {
    /// Load the secret from `path`, creating it (mode 0600, 32 random bytes as hex) if absent.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        let io = |source| SealError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => {
                warn_if_open(path);
                t
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| SealError::Rng(e.to_string()))?;
                let hex = hex::encode(secret);
                create_whole(path, format!("{hex}\n").as_bytes()).map_err(io)?;
                hex
            }
            Err(e) => return Err(io(e)),
        };
        // A byte-order mark (an editor's) is not part of the secret.
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            return Err(SealError::EmptySecret(path.to_path_buf()));
        }
        let bytes = hex::decode(text).map_err(|_| SealError::BadSecret(path.to_path_buf()))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SealError::BadSecret(path.to_path_buf()))?;
        Ok(Sealer::from_secret(&secret))
    }

    /// From raw secret bytes.
    pub fn from_secret(secret: &[u8; 32]) -> Sealer {
        use sha2::{Digest, Sha256};
        Sealer {
            cipher: XChaCha20Poly1305::new(secret.into()),
            tag_key: Sha256::new()
                .chain_update(b"modelrelay tag key\0")
                .chain_update(secret)
                .finalize()
                .into(),
        }
    }

    /// A name for `data` that only this server can make, the same every time (hex, 32
    /// characters): what is named cannot be read from it nor guessed by whoever knows `data`'s
    /// form. A Message-ID built from the outbox's row number told every recipient how many
    /// mails the shop had sent (found by an independent check).
    pub fn tag(&self, data: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        // The key first and the data's length with it: no prefix of one input is another's.
        let digest = Sha256::new()
            .chain_update(self.tag_key)
            .chain_update((data.len() as u64).to_le_bytes())
            .chain_update(data)
            .finalize();
        hex::encode(&digest[..16])
    }

    /// `nonce || ciphertext`, bound to `key_id` so sealed keys cannot be swapped between rows.
    pub fn seal(&self, key_id: &str, key: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Rng(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.as_bytes(),
                    aad: key_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The key sealed by [`Sealer::seal`] for the same `key_id`.
    pub fn open(&self, key_id: &str, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: key_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(pt).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tag_is_the_same_for_the_same_data_and_secret_only() {
        let a = Sealer::from_secret(&[1; 32]);
        let b = Sealer::from_secret(&[2; 32]);
        assert_eq!(a.tag(b"outbox.9.1"), a.tag(b"outbox.9.1"));
        assert_eq!(a.tag(b"outbox.9.1").len(), 32);
        assert_ne!(a.tag(b"outbox.9.1"), a.tag(b"outbox.9.2"));
        assert_ne!(a.tag(b"outbox.9.1"), b.tag(b"outbox.9.1"));
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_round_trip_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let s = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = s.seal("key_a", "sk-gateway-secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(s.open("key_a", &sealed).unwrap(), "sk-gateway-secret");
        assert!(s.open("key_b", &sealed).is_err());
        // Reloading the same file gives the same secret.
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open("key_a", &sealed).unwrap(), "sk-gateway-secret");
        // Another secret cannot open it.
        let other = Sealer::from_secret(&[7u8; 32]);
        assert!(other.open("key_a", &sealed).is_err());
    }

    #[test]
    fn bad_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(SealError::BadSecret(_))
        ));
        // Empty (an earlier version's first start on a full disk): said so.
        std::fs::write(&path, "").unwrap();
        let e = Sealer::load_or_create(&path).err().unwrap();
        assert!(matches!(e, SealError::EmptySecret(_)), "{e}");
        assert!(e.to_string().contains("delete it"), "{e}");
    }

    /// A secret written by an editor that adds a byte-order mark still reads.
    #[test]
    fn a_byte_order_mark_is_not_part_of_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let hex = "ab".repeat(32);
        std::fs::write(&path, format!("\u{feff}{hex}\r\n")).unwrap();
        let s = Sealer::load_or_create(&path).unwrap();
        let sealed = s.seal("k", "text").unwrap();
        let same = Sealer::from_secret(&[0xab; 32]);
        assert_eq!(same.open("k", &sealed).unwrap(), "text");
    }

    /// Creating the secret is whole or nothing: a failure leaves no file (an empty one
    /// refused every later start), and no temporary file either.
    #[test]
    fn a_failed_creation_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the temporary file would go makes the write fail.
        let path = dir.path().join("secret.key");
        std::fs::create_dir(dir.path().join("secret.key.new")).unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(SealError::Io { .. })
        ));
        assert!(!path.exists());
        std::fs::remove_dir(dir.path().join("secret.key.new")).unwrap();
        Sealer::load_or_create(&path).unwrap();
        assert!(path.exists());
        assert!(!dir.path().join("secret.key.new").exists());
    }
}
