//! The cluster key: the secret shared by every node, read from a key file
//! whose mode is checked ([`ClusterKey::from_file`]), and the truncated
//! HMAC-SHA256 tag it puts on frames and verifies on them. Apart from the
//! codec because it is the one part of `wire` that does I/O and handles a
//! secret (it wipes the buffers the key passed through). The scheme is
//! described under "Authentication" in the `wire` module doc (`mod.rs`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::frame::TAG_LEN;

/// The cluster's shared secret, ready to tag and verify frames. Cheap to
/// clone (the keyed HMAC state is precomputed once). Its `Debug` shows only
/// the fingerprint.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
    fingerprint: [u8; 8],
}

/// Why a cluster key cannot be used.
#[derive(Debug)]
pub enum KeyError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    NotAFile {
        path: PathBuf,
    },
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    TooLong {
        path: PathBuf,
    },
    OddHex {
        path: PathBuf,
    },
    /// `path` is `None` for [`ClusterKey::from_bytes`].
    TooShort {
        path: Option<PathBuf>,
        len: usize,
    },
}

const KEYGEN_HINT: &str = "generate one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE; chmod 600 FILE";

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, source } => {
                write!(
                    f,
                    "cannot read cluster key file {}: {source}",
                    path.display()
                )
            }
            KeyError::NotAFile { path } => {
                write!(
                    f,
                    "cluster key file {} is not a regular file",
                    path.display()
                )
            }
            KeyError::Permissions { path, mode } => write!(
                f,
                "cluster key file {p} has mode {mode:04o}: a key readable or writable by group or others is not secret; run `chmod 600 {p}` (owned by the user the daemon runs as)",
                p = path.display(),
                mode = mode & 0o7777,
            ),
            KeyError::TooLong { path } => write!(
                f,
                "cluster key file {} is larger than {} bytes: is it the right file?",
                path.display(),
                ClusterKey::MAX_FILE_LEN
            ),
            KeyError::OddHex { path } => write!(
                f,
                "cluster key file {} holds an odd number of hex digits",
                path.display()
            ),
            KeyError::TooShort { path, len } => {
                match path {
                    Some(p) => write!(f, "cluster key in {} ", p.display())?,
                    None => f.write_str("cluster key ")?,
                }
                write!(
                    f,
                    "is {len} bytes; at least {} are required ({KEYGEN_HINT})",
                    ClusterKey::MIN_LEN
                )
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl ClusterKey {
    /// Shortest acceptable key, in bytes (after hex decoding).
    pub const MIN_LEN: usize = 32;
    /// Largest key file read.
    pub const MAX_FILE_LEN: usize = 4096;

    /// A key from raw secret bytes (at least [`Self::MIN_LEN`]).
    pub fn from_bytes(secret: &[u8]) -> Result<ClusterKey, KeyError> {
        if secret.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                path: None,
                len: secret.len(),
            });
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        let digest = mac
            .clone()
            .chain_update(b"chimaera cluster key fingerprint")
            .finalize()
            .into_bytes();
        let mut fingerprint = [0; 8];
        fingerprint.copy_from_slice(&digest[..8]);
        Ok(ClusterKey { mac, fingerprint })
    }

    /// Reads a key file. Its content is the key as hex (only hex digits,
    /// trailing whitespace ignored) or, otherwise, raw bytes; either way at
    /// least [`Self::MIN_LEN`] bytes of key. The file must be a regular file
    /// with no permission bits for group or others (mode 0600 or 0400).
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClusterKey, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Check the opened file itself, not the path again.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut contents = Vec::with_capacity(256);
        file.take(Self::MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut contents)
            .map_err(read_err)?;
        let result = Self::from_file_contents(&contents, path);
        contents.fill(0);
        std::hint::black_box(&contents);
        result
    }

    fn from_file_contents(contents: &[u8], path: &Path) -> Result<ClusterKey, KeyError> {
        if contents.len() > Self::MAX_FILE_LEN {
            return Err(KeyError::TooLong {
                path: path.to_path_buf(),
            });
        }
        let text = contents.trim_ascii_end();
        let with_path = |e| match e {
            KeyError::TooShort { len, .. } => KeyError::TooShort {
                path: Some(path.to_path_buf()),
                len,
            },
            e => e,
        };
        if !text.is_empty() && text.iter().all(|&c| hex_val(c).is_some()) {
            if !text.len().is_multiple_of(2) {
                return Err(KeyError::OddHex {
                    path: path.to_path_buf(),
                });
            }
            let mut raw = [0u8; Self::MAX_FILE_LEN / 2];
            let n = text.len() / 2;
            for (i, pair) in text.chunks_exact(2).enumerate() {
                // Both digits were checked above.
                raw[i] = (hex_val(pair[0]).unwrap_or(0) << 4) | hex_val(pair[1]).unwrap_or(0);
            }
            let result = Self::from_bytes(&raw[..n]).map_err(with_path);
            raw.fill(0);
            std::hint::black_box(&raw);
            result
        } else {
            Self::from_bytes(contents).map_err(with_path)
        }
    }

    /// A short public identifier of the key (16 hex digits), for logs and
    /// `status` output, so operators can compare keys across nodes without
    /// revealing them.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub(super) fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let full = self
            .mac
            .clone()
            .chain_update(signed)
            .finalize()
            .into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Constant-time comparison of the leftmost bytes.
    pub(super) fn verify(&self, signed: &[u8], tag: &[u8]) -> bool {
        tag.len() == TAG_LEN
            && self
                .mac
                .clone()
                .chain_update(signed)
                .verify_truncated_left(tag)
                .is_ok()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}
