//! Bearer-token authentication from a token file, like kube-apiserver's `--token-auth-file`.
//!
//! `tokens.csv` in the data dir holds `token,user,uid,"group1,group2"` lines. The admin token is
//! made on first start; `skiff-control mint-token` adds node (or other) credentials, and the
//! running server picks them up without a restart (it re-reads the file when it changes).
//! Tokens are compared in constant time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};

use super::{AuthError, io_err, write_private};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name, e.g. `admin` or `system:node:node1`.
    pub name: String,
    /// Its groups, e.g. `system:masters`.
    pub groups: Vec<String>,
}

/// A file's modification time and length: tokens are only appended, so two writes within one
/// mtime tick still differ in length.
type FileStamp = (SystemTime, u64);

/// The token file and what it held when last read.
#[derive(Debug)]
pub struct TokenAuth {
    path: PathBuf,
    /// What the file looked like when read, and the tokens in it.
    state: Mutex<(Option<FileStamp>, HashMap<String, User>)>,
}

/// The admin's user and groups.
pub const ADMIN: (&str, &str) = ("admin", "system:masters");

impl TokenAuth {
    /// Opens `dir/tokens.csv`, creating it with an admin token if missing.
    pub fn open(dir: &Path) -> Result<Self, AuthError> {
        let path = dir.join("tokens.csv");
        if !path.exists() {
            let line = format!("{},{},{},\"{}\"\n", new_token(), ADMIN.0, ADMIN.0, ADMIN.1);
            write_private(&path, line.as_bytes())?;
        }
        let auth = TokenAuth {
            path,
            state: Mutex::new((None, HashMap::new())),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Re-reads the file if it changed since it was last read.
    pub fn reload(&self) -> Result<(), AuthError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        let mut state = self.state.lock().expect("token lock");
        if state.0.is_some() && state.0 == modified {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(io_err(&self.path))?;
        state.1 = parse(&self.path, &text)?;
        state.0 = modified;
        Ok(())
    }

    /// The caller of a request with `Authorization: Bearer <token>`, if the token is known.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<User> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        if let Err(err) = self.reload() {
            tracing::warn!(error = %err, "token file not reloaded; keeping the tokens read before");
        }
        let state = self.state.lock().expect("token lock");
        state
            .1
            .iter()
            .find(|(known, _)| constant_time_eq(known.as_bytes(), token.as_bytes()))
            .map(|(_, user)| user.clone())
    }

    /// The first token of `user` (the admin's, for the admin kubeconfig).
    pub fn token_of(&self, user: &str) -> Option<String> {
        let state = self.state.lock().expect("token lock");
        state
            .1
            .iter()
            .find(|(_, u)| u.name == user)
            .map(|(t, _)| t.clone())
    }
}

/// Adds a token for `user` with `groups` to `dir/tokens.csv`; returns it.
pub fn mint(dir: &Path, user: &str, groups: &[String]) -> Result<String, AuthError> {
    if user.is_empty()
        || user.contains([',', '"', '\n'])
        || groups.iter().any(|g| g.contains([',', '"', '\n']))
    {
        return Err(AuthError::Certificate(format!(
            "user and group names may not contain commas, quotes or newlines: {user:?} {groups:?}"
        )));
    }
    let path = dir.join("tokens.csv");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    parse(&path, &text)?;
    let token = new_token();
    text.push_str(&format!("{token},{user},{user},\"{}\"\n", groups.join(",")));
    write_private(&path, text.as_bytes())?;
    Ok(token)
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(path: &Path, text: &str) -> Result<HashMap<String, User>, AuthError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| AuthError::TokenFile {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let mut fields = line.splitn(4, ',');
        let token = fields
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no token"))?;
        let user = fields
            .next()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("no user"))?;
        let _uid = fields.next().ok_or_else(|| bad("no uid"))?;
        let groups = fields
            .next()
            .map(|g| {
                g.trim_matches('"')
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        users.insert(
            token.to_owned(),
            User {
                name: user.to_owned(),
                groups,
            },
        );
    }
    Ok(users)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn admin_token_minted_tokens_and_strangers() {
        let dir = std::env::temp_dir().join(format!("skiff-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = TokenAuth::open(&dir).unwrap();
        let admin = auth.token_of("admin").unwrap();
        assert_eq!(
            auth.authenticate(&bearer(&admin)).unwrap().groups,
            vec!["system:masters"]
        );
        assert_eq!(auth.authenticate(&bearer("nope")), None);
        assert_eq!(auth.authenticate(&HeaderMap::new()), None);
        // Minted while "running": picked up without reopening.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let node = mint(&dir, "system:node:node1", &["system:nodes".into()]).unwrap();
        let user = auth.authenticate(&bearer(&node)).unwrap();
        assert_eq!(user.name, "system:node:node1");
        assert!(mint(&dir, "a,b", &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = parse(Path::new("t.csv"), "abc,admin,admin,\"g\"\n,x,y\n").unwrap_err();
        assert!(err.to_string().contains("t.csv:2"), "{err}");
    }
}
