//! The process runtime's images: a local catalog instead of a registry.
//!
//! A Pod names an image; the process runtime has no filesystem images to unpack, so an image is
//! an entry in a catalog folder naming an executable on this machine and the image config's
//! defaults — entrypoint, cmd, env, working dir — exactly the fields a container runtime takes
//! from an OCI image config. Entry for `skiff/test-server` (any tag) is the file
//! `<catalog>/skiff/test-server.json`:
//!
//! ```json
//! {"entrypoint": ["/usr/local/bin/skiff-test-server"], "cmd": ["--http-port", "8080"],
//!  "env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "workingDir": "/"}
//! ```
//!
//! Kubernetes' rules then decide the command line: `command` replaces the entrypoint (and drops
//! the image's cmd), `args` replaces the cmd.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An image's config, as the catalog holds it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageConfig {
    /// The executable and its fixed arguments.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Default arguments.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `NAME=value` defaults.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    /// Not in the catalog (`ErrImagePull`).
    #[error("image {image:?} is not in the image catalog {catalog}")]
    NotFound {
        /// The image reference.
        image: String,
        /// The catalog folder.
        catalog: PathBuf,
    },
    /// The entry is not valid JSON of the right shape (`InvalidImageName`).
    #[error("the catalog entry {path} is invalid: {message}")]
    Invalid {
        /// The entry's file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The runtime could not pull it (`ErrImagePull`): the registry's answer.
    #[error("failed to pull image {image:?}: {message}")]
    PullFailed {
        /// The image reference.
        image: String,
        /// Why, as the runtime tells it.
        message: String,
    },
    /// `imagePullPolicy: Never` and the node does not have it (`ErrImageNeverPull`).
    #[error("container image {image:?} is not present with pull policy of Never")]
    NeverPull {
        /// The image reference.
        image: String,
    },
    /// Neither the Pod nor the image gives a command.
    #[error("no command: the container has no command and image {image:?} no entrypoint or cmd")]
    NoCommand {
        /// The image reference.
        image: String,
    },
}

impl ImageError {
    /// The container status `waiting.reason` Kubernetes shows for it.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NotFound { .. } | ImageError::PullFailed { .. } => "ErrImagePull",
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            ImageError::Invalid { .. } => "InvalidImageName",
            ImageError::NoCommand { .. } => "CreateContainerConfigError",
        }
    }
}

/// The catalog folder.
#[derive(Clone, Debug)]
pub struct Catalog {
    dir: PathBuf,
}

/// `docker.io/library/nginx:1.27@sha256:...` → `nginx`; `skiff/test-server:v1` and
/// `localhost:5000/skiff/test-server` → `skiff/test-server`. The registry (a first part with a
/// `.` or `:`, or `localhost`, as image references define it) is dropped, so one manifest names
/// the same image on both runtimes. Tags and digests are ignored: an entry is one version.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' is a tag; one before it is a registry port.
    let name = match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    };
    let name = match name.split_once('/') {
        Some((registry, rest)) if registry.contains(['.', ':']) || registry == "localhost" => rest,
        _ => name,
    };
    name.strip_prefix("library/").unwrap_or(name)
}

impl Catalog {
    /// The catalog in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Catalog { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The repositories it holds (`skiff/test-server`), sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut folders = vec![self.dir.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "json")
                    && let Ok(relative) = path.with_extension("").strip_prefix(&self.dir)
                {
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    /// Looks `image` up.
    pub fn lookup(&self, image: &str) -> Result<ImageConfig, ImageError> {
        let repo = repository(image);
        let not_found = || ImageError::NotFound {
            image: image.to_owned(),
            catalog: self.dir.clone(),
        };
        if repo.is_empty() || repo.split('/').any(|part| part.is_empty() || part == "..") {
            return Err(not_found());
        }
        let path = self.dir.join(format!("{repo}.json"));
        let bytes = std::fs::read(&path).map_err(|_| not_found())?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
            path,
            message: e.to_string(),
        })
    }
}

/// What to run for a container: argv, image env defaults and the working dir.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The command line.
    pub argv: Vec<String>,
    /// `NAME=value` from the image, overridden by the Pod's.
    pub image_env: Vec<(String, String)>,
    /// The working directory.
    pub working_dir: Option<String>,
}

/// Kubernetes' rules: `command` replaces the entrypoint and drops cmd; `args` replaces cmd. An
/// image missing from the catalog is fine when the container gives its own `command`.
pub fn resolve(
    catalog: &Catalog,
    image: &str,
    command: &[String],
    args: Option<&[String]>,
    working_dir: Option<&str>,
) -> Result<Launch, ImageError> {
    let config = match catalog.lookup(image) {
        Ok(config) => config,
        Err(ImageError::NotFound { .. }) if !command.is_empty() => ImageConfig::default(),
        Err(err) => return Err(err),
    };
    let mut argv = if command.is_empty() {
        config.entrypoint.clone()
    } else {
        command.to_vec()
    };
    match args {
        Some(args) => argv.extend(args.iter().cloned()),
        None if command.is_empty() => argv.extend(config.cmd.iter().cloned()),
        None => {}
    }
    if argv.is_empty() {
        return Err(ImageError::NoCommand {
            image: image.to_owned(),
        });
    }
    let image_env = config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Ok(Launch {
        argv,
        image_env,
        working_dir: working_dir.map(str::to_owned).or(config.working_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (Catalog, PathBuf) {
        // One folder per call: tests run in parallel and one's rewrite is another's empty read.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("skiff-images-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("skiff")).unwrap();
        std::fs::write(
            dir.join("skiff/test-server.json"),
            r#"{"entrypoint": ["/bin/server"], "cmd": ["--port", "8080"], "env": ["A=1", "PATH=/bin"], "workingDir": "/srv"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("broken.json"), r#"{"entrypoint": "not a list"}"#).unwrap();
        (Catalog::new(&dir), dir)
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repositories_drop_registry_defaults_tags_and_digests() {
        assert_eq!(repository("skiff/test-server"), "skiff/test-server");
        assert_eq!(repository("skiff/test-server:v1"), "skiff/test-server");
        assert_eq!(repository("docker.io/library/nginx:1.27"), "nginx");
        assert_eq!(repository("nginx@sha256:abc"), "nginx");
        assert_eq!(repository("reg:5000/team/app"), "team/app");
        assert_eq!(
            repository("localhost:5000/skiff/test-server:latest"),
            "skiff/test-server"
        );
        assert_eq!(
            repository("localhost/skiff/test-server"),
            "skiff/test-server"
        );
        assert_eq!(repository("team/app"), "team/app");
    }

    #[test]
    fn kubernetes_rules_for_command_and_args() {
        let (catalog, dir) = catalog();
        let image = "skiff/test-server:latest";
        let plain = resolve(&catalog, image, &[], None, None).unwrap();
        assert_eq!(plain.argv, strings(&["/bin/server", "--port", "8080"]));
        assert_eq!(plain.working_dir.as_deref(), Some("/srv"));
        assert_eq!(plain.image_env[0], ("A".to_owned(), "1".to_owned()));
        let args = strings(&["--port", "9090"]);
        let with_args = resolve(&catalog, image, &[], Some(&args), None).unwrap();
        assert_eq!(with_args.argv, strings(&["/bin/server", "--port", "9090"]));
        let command = strings(&["/bin/sh", "-c", "true"]);
        let with_command = resolve(&catalog, image, &command, None, Some("/tmp")).unwrap();
        assert_eq!(with_command.argv, command, "command drops the image's cmd");
        assert_eq!(with_command.working_dir.as_deref(), Some("/tmp"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_images_need_a_command_and_broken_entries_say_why() {
        let (catalog, dir) = catalog();
        let err = resolve(&catalog, "nginx", &[], None, None).unwrap_err();
        assert_eq!(err.reason(), "ErrImagePull");
        assert!(
            err.to_string()
                .starts_with("image \"nginx\" is not in the image catalog")
        );
        let command = strings(&["/bin/true"]);
        assert_eq!(
            resolve(&catalog, "nginx", &command, None, None)
                .unwrap()
                .argv,
            command
        );
        let broken = resolve(&catalog, "broken", &[], None, None).unwrap_err();
        assert_eq!(broken.reason(), "InvalidImageName");
        assert_eq!(catalog.entries(), ["broken", "skiff/test-server"]);
        let escape = catalog.lookup("../etc/passwd").unwrap_err();
        assert_eq!(escape.reason(), "ErrImagePull");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
