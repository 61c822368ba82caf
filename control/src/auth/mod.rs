//! Security from the first start: a CA and serving certificate made on first start, bearer
//! tokens for every caller, and kubeconfigs that carry both.

pub mod kubeconfig;
pub mod tls;
pub mod tokens;

/// Errors of the auth setup (files in the data dir, certificate generation).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The token file has a bad line.
    #[error("{path}:{line}: {reason}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` readable by the owner only (keys, tokens, kubeconfigs).
pub(crate) fn write_private(path: &std::path::Path, contents: &[u8]) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
