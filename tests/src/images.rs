//! OCI images of our own, built from files on this machine, for Pods that run as containers.
//!
//! There is no internet here, so containerd cannot pull `busybox` or `pause` from Docker Hub:
//! the harness builds the images it needs and pushes them to a local registry ([`Registry`],
//! Debian's `docker-registry`). Choices, and why:
//!
//! - **One uncompressed layer.** Layers are small (a few MB) and travel over loopback, so gzip
//!   would only cost time; `application/vnd.oci.image.layer.v1.tar` is a standard media type
//!   that containerd 1.6 and distribution 2.8 both accept. The layer digest is then also the
//!   config's `diff_id`.
//! - **Deterministic tars.** Entries in path order, mtime 0, uid/gid 0: the same inputs give the
//!   same digests, so a second push uploads nothing and a node that has the image keeps it.
//! - **`ldd`'s libraries at the paths `ldd` names.** Our binaries are dynamically linked against
//!   glibc; copying the loader and every library (through symlinks, as real files) to the exact
//!   paths the host resolves is all a glibc binary needs, with no base image to fetch.
//! - **A root filesystem of its own** (`/etc/os-release` with `ID=skiff`, `passwd`, `group`,
//!   `/tmp`, mount points): a test can tell from inside whether it runs in the image or the host.
//! - **`localhost:5000/...` references.** Every reference names [`REGISTRY_HOST`]; containerd on
//!   each node maps that host to wherever the registry really listens (a registry mirror), so
//!   references stay the same on every cluster, and the process runtime's catalog ignores it.

mod registry;
mod rootfs;

use std::fmt;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub use registry::Registry;
pub use rootfs::RootFs;

use crate::binaries;

/// The registry host:port every image reference names; containerd on each node maps it to the
/// registry's real endpoint (mirror config), and the process runtime's catalog ignores it.
pub const REGISTRY_HOST: &str = "localhost:5000";
/// The port the registry listens on (in whichever namespace it runs).
pub const REGISTRY_PORT: u16 = 5000;
/// `skiff-test-server` with busybox beside it, for exec probes and debugging.
pub const TEST_SERVER_IMAGE: &str = "localhost:5000/skiff/test-server:latest";
/// busybox-static alone; runs `sh` unless told otherwise.
pub const BUSYBOX_IMAGE: &str = "localhost:5000/skiff/busybox:latest";
/// `skiff-dns`, the cluster DNS add-on.
pub const DNS_IMAGE: &str = "localhost:5000/skiff/dns:latest";
/// `skiff-pause`, the sandbox ("pause") container's image.
pub const PAUSE_IMAGE: &str = "localhost:5000/skiff/pause:latest";

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// `PATH` in every image, as Docker sets it.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a manifest says about one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: &'static str,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
}

impl Descriptor {
    /// Describes `bytes` as a blob of `media_type`.
    pub fn of(media_type: &'static str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type,
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
        }
    }

    fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// An image's manifest: the exact bytes to push, and their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest JSON as pushed (its digest is over these bytes).
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of [`Manifest::bytes`].
    pub digest: String,
    /// The config blob it names.
    pub config: Descriptor,
    /// The one layer it names.
    pub layer: Descriptor,
}

/// An image built locally: one uncompressed layer (a tar) plus the config containerd reads.
#[derive(Clone)]
pub struct Image {
    /// The full reference, e.g. [`TEST_SERVER_IMAGE`].
    pub reference: String,
    /// The layer: a tar of the whole root filesystem.
    pub layer: Vec<u8>,
    /// The OCI image config (architecture, os, `config`, `rootfs.diff_ids`).
    pub config: Value,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("reference", &self.reference)
            .field("layer_bytes", &self.layer.len())
            .field("config", &self.config)
            .finish()
    }
}

impl Image {
    /// An image of `reference` whose filesystem is `rootfs` and whose runtime settings (the
    /// config's `config` object: Entrypoint, Cmd, Env, WorkingDir) are `runtime`.
    pub fn new(reference: &str, rootfs: &RootFs, runtime: Value) -> Result<Self> {
        split_reference(reference)?;
        let layer = rootfs.tar()?;
        let mut config = json!({
            "architecture": oci_architecture(),
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        });
        config["config"] = runtime;
        Ok(Image {
            reference: reference.to_owned(),
            layer,
            config,
        })
    }

    /// The repository inside the registry, e.g. `skiff/test-server`.
    pub fn repository(&self) -> &str {
        split_reference(&self.reference).map_or("", |(_, repo, _)| repo)
    }

    /// The tag, e.g. `latest`.
    pub fn tag(&self) -> &str {
        split_reference(&self.reference).map_or("", |(_, _, tag)| tag)
    }

    /// The config blob's bytes (its digest is over these).
    pub fn config_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config).expect("a JSON value always serializes")
    }

    /// The OCI manifest naming the config and the layer, with sha256 digests and sizes.
    pub fn manifest(&self) -> Manifest {
        let config = Descriptor::of(CONFIG_MEDIA_TYPE, &self.config_bytes());
        let layer = Descriptor::of(LAYER_MEDIA_TYPE, &self.layer);
        let value = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json()],
        });
        let bytes = serde_json::to_vec(&value).expect("a JSON value always serializes");
        Manifest {
            digest: sha256_digest(&bytes),
            bytes,
            config,
            layer,
        }
    }
}

/// Splits `host[:port]/repo/sitory:tag` into its three parts.
fn split_reference(reference: &str) -> Result<(&str, &str, &str)> {
    let (host, rest) = reference
        .split_once('/')
        .with_context(|| format!("image reference {reference:?} names no registry host"))?;
    let (repository, tag) = rest
        .rsplit_once(':')
        .filter(|(repo, tag)| !repo.is_empty() && !tag.is_empty() && !tag.contains('/'))
        .with_context(|| format!("image reference {reference:?} has no repository:tag"))?;
    Ok((host, repository, tag))
}

/// `sha256:<lower-case hex>` of `bytes`, as OCI digests are written.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash.iter() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The test server (`target/debug/skiff-test-server`) as `/usr/local/bin/skiff-test-server`,
/// with busybox in `/bin` so exec probes and `sh` work inside it.
pub fn test_server_image() -> Result<Image> {
    let server = binaries::binary("skiff-test-server")?;
    let mut rootfs = RootFs::base("test-server");
    rootfs.host_binary("/usr/local/bin/skiff-test-server", &server)?;
    rootfs.busybox()?;
    Image::new(
        TEST_SERVER_IMAGE,
        &rootfs,
        json!({
            "Entrypoint": ["/usr/local/bin/skiff-test-server"],
            "Env": [PATH_ENV],
            "WorkingDir": "/",
        }),
    )
}

/// busybox-static with every applet linked in `/bin`; runs `sh`.
pub fn busybox_image() -> Result<Image> {
    let mut rootfs = RootFs::base("busybox");
    rootfs.busybox()?;
    Image::new(
        BUSYBOX_IMAGE,
        &rootfs,
        json!({"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"}),
    )
}

/// `skiff-pause` (`target/debug/skiff-pause`) as `/pause`.
pub fn pause_image() -> Result<Image> {
    let pause = binaries::binary("skiff-pause")?;
    let mut rootfs = RootFs::base("pause");
    rootfs.host_binary("/pause", &pause)?;
    Image::new(
        PAUSE_IMAGE,
        &rootfs,
        json!({"Entrypoint": ["/pause"], "Env": [PATH_ENV], "WorkingDir": "/"}),
    )
}

/// `skiff-dns` (`target/debug/skiff-dns`) as `/usr/local/bin/skiff-dns`.
pub fn dns_image() -> Result<Image> {
    let dns = binaries::binary("skiff-dns")?;
    let mut rootfs = RootFs::base("dns");
    rootfs.host_binary("/usr/local/bin/skiff-dns", &dns)?;
    Image::new(
        DNS_IMAGE,
        &rootfs,
        json!({"Entrypoint": ["/usr/local/bin/skiff-dns"], "Env": [PATH_ENV], "WorkingDir": "/"}),
    )
}

/// The test server, busybox, DNS and pause images.
pub fn all_images() -> Result<Vec<Image>> {
    Ok(vec![
        test_server_image()?,
        busybox_image()?,
        dns_image()?,
        pause_image()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of this very test binary: a dynamically linked Rust program, as ours are.
    fn image_of_this_binary() -> Image {
        let exe = std::env::current_exe().unwrap();
        let mut rootfs = RootFs::base("unit");
        rootfs.host_binary("/usr/local/bin/unit", &exe).unwrap();
        Image::new(
            "localhost:5000/skiff/unit:v1",
            &rootfs,
            json!({"Entrypoint": ["/usr/local/bin/unit"]}),
        )
        .unwrap()
    }

    #[test]
    fn the_same_input_gives_the_same_digests() {
        let (first, second) = (image_of_this_binary(), image_of_this_binary());
        assert_eq!(first.manifest(), second.manifest());
        let mut changed = RootFs::base("unit");
        changed.file("/etc/extra", 0o644, b"x".to_vec());
        assert_ne!(
            sha256_digest(&changed.tar().unwrap()),
            sha256_digest(&RootFs::base("unit").tar().unwrap())
        );
    }

    #[test]
    fn the_manifest_names_config_and_layer_by_digest_and_size() {
        let image = image_of_this_binary();
        let manifest = image.manifest();
        let value: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(manifest.digest, sha256_digest(&manifest.bytes));
        assert_eq!(value["schemaVersion"], 2);
        assert_eq!(value["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(value["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(
            value["config"]["digest"],
            sha256_digest(&image.config_bytes())
        );
        assert_eq!(value["config"]["size"], image.config_bytes().len());
        let layers = value["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], sha256_digest(&image.layer));
        assert_eq!(layers[0]["size"], image.layer.len());
        // Uncompressed: the layer digest is the diff_id.
        assert_eq!(image.config["rootfs"]["diff_ids"][0], layers[0]["digest"]);
        assert_eq!(image.config["os"], "linux");
        assert_eq!(
            (image.repository(), image.tag()),
            ("skiff/unit", "v1"),
            "{}",
            image.reference
        );
    }

    #[test]
    fn references_split_into_host_repository_and_tag() {
        assert_eq!(
            split_reference(TEST_SERVER_IMAGE).unwrap(),
            ("localhost:5000", "skiff/test-server", "latest")
        );
        assert!(split_reference("busybox").is_err());
        assert!(split_reference("localhost:5000/skiff/busybox").is_err());
    }
}
