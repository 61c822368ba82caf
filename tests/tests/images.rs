//! Our images, through a real registry and a real containerd: pushed to `docker-registry`, they
//! come back byte for byte to another client (curl), a second push uploads nothing, and
//! containerd pulls the busybox and test-server images and runs them under runc. Needs root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_tests::images::{
    self, BUSYBOX_IMAGE, Image, MANIFEST_MEDIA_TYPE, Registry, TEST_SERVER_IMAGE,
};
use skiff_tests::topology::default_log_root;
use skiff_tests::{Netns, Run, kernelfs};

const CURL_TIMEOUT: Duration = Duration::from_secs(20);

fn registry_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], images::REGISTRY_PORT))
}

/// The image whose reference is `reference`.
fn find<'a>(images: &'a [Image], reference: &str) -> &'a Image {
    images
        .iter()
        .find(|image| image.reference == reference)
        .expect("all_images has it")
}

/// Requests the registry logged (its access log), e.g. `"HEAD /v2/`.
fn logged(registry: &Registry, request: &str) -> usize {
    registry.log().matches(request).count()
}

/// `curl` inside `netns`: the answer's headers and body, or an error with curl's stderr.
fn curl(netns: &Netns, args: &[&str]) -> Result<String> {
    let mut argv = vec!["curl", "-sS", "--fail-with-body", "--max-time", "10"];
    argv.extend_from_slice(args);
    netns.exec(&argv, CURL_TIMEOUT)
}

#[test]
fn pushed_images_come_back_whole_and_a_second_push_uploads_nothing() -> Result<()> {
    let run = Run::start("images", &default_log_root())?;
    let netns = Netns::create(&run.id().object("reg"))?;
    let registry = Registry::start(&run, &netns, registry_addr())?;

    let built = Instant::now();
    let images = images::all_images()?;
    let built = built.elapsed();
    let pushed = Instant::now();
    let mut digests = Vec::new();
    for image in &images {
        digests.push(registry.push(image)?);
    }
    let pushed = pushed.elapsed();
    for (image, digest) in images.iter().zip(&digests) {
        eprintln!(
            "{}: layer {} bytes, manifest {digest}",
            image.reference,
            image.layer.len()
        );
        assert_eq!(digest, &image.manifest().digest);
    }
    eprintln!("built in {built:?}, pushed in {pushed:?}");

    // The manifest, asked for as an OCI manifest, is the one pushed, under the same digest.
    let server = find(&images, TEST_SERVER_IMAGE);
    let base = format!("http://{}", registry.addr());
    let answer = curl(
        &netns,
        &[
            "-i",
            "-H",
            &format!("Accept: {MANIFEST_MEDIA_TYPE}"),
            &format!("{base}/v2/skiff/test-server/manifests/latest"),
        ],
    )?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("no end of headers from curl -i")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
            .unwrap_or_default()
    };
    assert_eq!(header("Docker-Content-Digest"), digests[0], "{head}");
    assert_eq!(header("Content-Type"), MANIFEST_MEDIA_TYPE, "{head}");
    assert_eq!(body.as_bytes(), server.manifest().bytes.as_slice());

    // The layer blob comes back byte for byte.
    let layer = server.manifest().layer;
    let download = run.scratch_dir("download")?.join("layer.tar");
    curl(
        &netns,
        &[
            "-o",
            &download.to_string_lossy(),
            &format!("{base}/v2/skiff/test-server/blobs/{}", layer.digest),
        ],
    )?;
    let fetched = std::fs::read(&download)?;
    assert_eq!(fetched.len() as u64, layer.size);
    assert_eq!(images::sha256_digest(&fetched), layer.digest);

    // Pushing again asks about each blob and uploads none of them.
    let (heads, uploads) = (
        logged(&registry, "\"HEAD /v2/"),
        logged(&registry, "\"POST /v2/"),
    );
    ensure!(
        uploads == 2 * images.len(),
        "the first push should have uploaded 2 blobs per image; the registry log:\n{}",
        registry.log()
    );
    for (image, digest) in images.iter().zip(&digests) {
        assert_eq!(&registry.push(image)?, digest);
    }
    assert_eq!(logged(&registry, "\"HEAD /v2/"), heads + 2 * images.len());
    assert_eq!(logged(&registry, "\"POST /v2/"), uploads);
    Ok(())
}

/// A containerd of the run's own inside `netns`: its root, state and socket under `dir`. It
/// keeps the host's mount namespace, as on a node: `ip netns exec` mounts a fresh /sys, which
/// hides the cgroup hierarchies runc needs ("no cgroup mount found in mountinfo").
fn start_containerd(run: &Run, netns: &Netns, dir: &Path) -> Result<skiff_tests::Process> {
    let config = dir.join("config.toml");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        ),
    )?;
    let config = config.to_string_lossy();
    let command = netns.command_keeping_mounts(&["containerd", "--config", &config]);
    skiff_tests::Process::spawn_command(run, "containerd", command)
}

/// Unmounts, when dropped, whatever is still mounted below a folder (a container's rootfs left
/// by a containerd stopped mid-test), so the run can remove the folder.
struct UnmountBelow(PathBuf);

impl Drop for UnmountBelow {
    fn drop(&mut self) {
        if let Err(err) = kernelfs::unmount_below(std::slice::from_ref(&self.0)) {
            eprintln!("{err:#}");
        }
    }
}

#[test]
fn containerd_pulls_our_images_and_runs_them_under_runc() -> Result<()> {
    let run = Run::start("images-containerd", &default_log_root())?;
    let netns = Netns::create(&run.id().object("ctd"))?;
    let registry = Registry::start(&run, &netns, registry_addr())?;
    for image in [images::busybox_image()?, images::test_server_image()?] {
        registry.push(&image)?;
    }

    let dir = run.scratch_dir("containerd")?;
    let _unmount = UnmountBelow(dir.clone());
    let containerd = start_containerd(&run, &netns, &dir)?;
    let socket = dir.join("containerd.sock");
    let socket = socket.to_string_lossy();
    let ctr = |args: &[&str], timeout: Duration| {
        let mut argv = vec!["ctr", "--address", &socket, "-n", "k8s.io"];
        argv.extend_from_slice(args);
        netns
            .exec(&argv, timeout)
            .with_context(|| format!("containerd's log:\n{}", containerd.log()))
    };
    let started = Instant::now();
    skiff_tests::wait::retry(Duration::from_secs(20), || {
        ctr(&["version"], Duration::from_secs(5)).map(drop)
    })?;
    eprintln!("containerd answered after {:?}", started.elapsed());

    // FIFOs and runc's state in the run's folder; `--cgroup ""` lets runc name the cgroup
    // after the container, and remove it with it.
    let (fifos, runc_root) = (dir.join("fifo"), dir.join("runc"));
    let (fifos, runc_root) = (fifos.to_string_lossy(), runc_root.to_string_lossy());
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            BUSYBOX_IMAGE,
            &["cat", "/etc/os-release"],
            &["PRETTY_NAME=\"skiff busybox image\""],
        ),
        // The glibc binary runs on the loader and libraries the image carries; sh is busybox.
        (
            TEST_SERVER_IMAGE,
            &[
                "sh",
                "-c",
                "skiff-test-server --help 2>&1; cat /etc/os-release",
            ],
            &[
                "usage: skiff-test-server",
                "PRETTY_NAME=\"skiff test-server image\"",
            ],
        ),
    ];
    for (n, (image, command, expected)) in cases.into_iter().enumerate() {
        // The reference names the registry where it listens here (no mirror config).
        let reference = image.replacen(images::REGISTRY_HOST, &registry.addr().to_string(), 1);
        let pulled = Instant::now();
        ctr(
            &["images", "pull", "--plain-http", &reference],
            Duration::from_secs(60),
        )?;
        let pulled = pulled.elapsed();
        let container = run.id().object(&format!("t{n}"));
        let mut argv = vec![
            "run",
            "--rm",
            "--cgroup",
            "",
            "--fifo-dir",
            &fifos,
            "--runc-root",
            &runc_root,
            &reference,
            &container,
        ];
        argv.extend_from_slice(command);
        let ran = Instant::now();
        let output = ctr(&argv, Duration::from_secs(60))?;
        eprintln!(
            "{reference}: pulled in {pulled:?}, ran in {:?}",
            ran.elapsed()
        );
        for line in expected {
            assert!(output.contains(line), "{reference} printed:\n{output}");
        }
    }
    let listed = ctr(&["images", "ls", "-q"], Duration::from_secs(10))?;
    assert_eq!(listed.lines().count(), 2, "{listed}");
    Ok(())
}
