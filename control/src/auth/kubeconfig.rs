//! kubeconfig files: the server, the CA that signed it, and a token.

use std::path::Path;

use base64::Engine;

use super::{AuthError, io_err, write_private};

/// Writes a kubeconfig for `user` with `token` at `path`, trusting the CA in `ca_cert`.
pub fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    token: &str,
) -> Result<(), AuthError> {
    let ca = std::fs::read(ca_cert).map_err(io_err(ca_cert))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}@skiff
  context:
    cluster: skiff
    user: {user}
current-context: {user}@skiff
"
    );
    write_private(path, text.as_bytes())
}
