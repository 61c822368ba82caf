//! An image's root filesystem, assembled in memory and written as one deterministic tar.
//!
//! Binaries come from the host: a dynamically linked one brings the loader and the libraries
//! `ldd` resolves for it, copied as real files to the paths `ldd` prints, so the loader finds
//! them in the image exactly where it found them on the host (no `ld.so.cache` needed: those
//! are its default folders). Debug info is stripped first; a debug build is mostly DWARF.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;

/// busybox-static, from Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// One entry of a [`RootFs`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// A root filesystem being put together in memory; [`RootFs::tar`] writes it as a layer.
#[derive(Clone, Debug, Default)]
pub struct RootFs {
    /// Paths without the leading `/`; a `BTreeMap` so every parent precedes its children.
    entries: BTreeMap<String, Entry>,
}

impl RootFs {
    /// The skeleton every image has: `/etc/os-release` naming the image (`ID=skiff`), `passwd`
    /// and `group` with root and nobody, empty `resolv.conf` and `hosts` (the runtime mounts
    /// its own), `/tmp` (1777), and the `/proc`, `/sys`, `/dev` mount points.
    pub fn base(name: &str) -> Self {
        let mut rootfs = RootFs::default();
        let os_release = format!(
            "PRETTY_NAME=\"skiff {name} image\"\nNAME=\"skiff\"\nID=skiff\nVARIANT_ID={name}\n"
        );
        rootfs.file("/etc/os-release", 0o644, os_release.into_bytes());
        rootfs.file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        );
        rootfs.file(
            "/etc/group",
            0o644,
            b"root:x:0:\nnobody:x:65534:\n".to_vec(),
        );
        rootfs.file("/etc/resolv.conf", 0o644, Vec::new());
        rootfs.file("/etc/hosts", 0o644, Vec::new());
        rootfs.dir("/tmp", 0o1777);
        rootfs.dir("/root", 0o700);
        for mount_point in ["/proc", "/sys", "/dev"] {
            rootfs.dir(mount_point, 0o755);
        }
        rootfs
    }

    /// Adds (or replaces) directory `path`.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.insert(path, Entry::Dir { mode });
    }

    /// Adds (or replaces) regular file `path`.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.insert(path, Entry::File { mode, data });
    }

    /// Adds (or replaces) symlink `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(
            path,
            Entry::Symlink {
                target: target.to_owned(),
            },
        );
    }

    /// The file at `path`, if it is a regular file.
    pub fn file_data(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path.trim_start_matches('/')) {
            Some(Entry::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// Adds host binary `host` at `path`, without debug info, plus every shared library `ldd`
    /// names (the loader too), as real files at the paths `ldd` prints.
    pub fn host_binary(&mut self, path: &str, host: &Path) -> Result<()> {
        let stripped = strip_debug(host)?;
        self.file(path, 0o755, stripped);
        for library in shared_libraries(host)? {
            // fs::read follows symlinks: the real file lands where the loader looks.
            let data = std::fs::read(&library)
                .with_context(|| format!("cannot read {}", library.display()))?;
            let path = library
                .to_str()
                .with_context(|| format!("{} is not UTF-8", library.display()))?;
            self.file(path, 0o755, data);
        }
        Ok(())
    }

    /// Adds `/bin/busybox` (busybox-static) and a `/bin/<applet>` symlink for each applet.
    pub fn busybox(&mut self) -> Result<()> {
        let data = std::fs::read(BUSYBOX)
            .with_context(|| format!("cannot read {BUSYBOX} (Debian package busybox-static)"))?;
        let list = cmd::run(Command::new(BUSYBOX).arg("--list"), cmd::CONFIG_TIMEOUT)
            .context("cannot list busybox's applets")?;
        self.file("/bin/busybox", 0o755, data);
        for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
            ensure!(!applet.contains('/'), "odd busybox applet name {applet:?}");
            if applet == "busybox" {
                continue;
            }
            self.symlink(&format!("/bin/{applet}"), "busybox");
        }
        Ok(())
    }

    /// The filesystem as an uncompressed tar: entries in path order, mtime 0, owner 0:0.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let result = match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())
                }
                Entry::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)
                }
            };
            result.with_context(|| format!("cannot add /{path} to the layer"))?;
        }
        builder.into_inner().context("cannot finish the layer")
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        assert!(
            !path.is_empty() && !path.split('/').any(|c| c.is_empty() || c == ".."),
            "bad path {path:?} in an image"
        );
        // Every parent is a directory of its own entry, as image tars list them.
        let mut parent = String::new();
        for component in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path.to_owned(), entry);
    }
}

/// `host` without debug info (`strip --strip-debug`), read back from a temporary file.
fn strip_debug(host: &Path) -> Result<Vec<u8>> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let out = std::env::temp_dir().join(format!(
        "skiff-image-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    /// Removes the temporary file however this function ends.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&out);
    cmd::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(host),
        Duration::from_secs(60),
    )
    .with_context(|| format!("cannot strip {}", host.display()))?;
    std::fs::read(&out).with_context(|| format!("cannot read {}", out.display()))
}

/// The shared libraries (and loader) `ldd` says `binary` needs; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = cmd::output(Command::new("ldd").arg(binary), cmd::CONFIG_TIMEOUT)
        .with_context(|| format!("cannot run ldd {}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), stderr.trim());
    }
    parse_ldd(&text)
}

/// The absolute paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6 (0x...)`, or the
/// loader's `/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has none.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = line
            .split_once("=>")
            .map_or(line, |(_, right)| right.trim());
        if target.starts_with("not found") {
            bail!("ldd: a library is missing: {line}");
        }
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_entries(layer: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(layer);
        let mut entries = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            assert_eq!(header.mtime().unwrap(), 0, "{path}");
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let kind = header.entry_type();
            entries.insert(path, (kind, header.mode().unwrap(), data));
        }
        entries
    }

    #[test]
    fn the_layer_holds_the_stripped_binary_its_loader_and_os_release() {
        // This very test binary: a dynamically linked Rust program, as ours are.
        let exe = std::env::current_exe().unwrap();
        let mut rootfs = RootFs::base("unit");
        rootfs.host_binary("/usr/local/bin/unit", &exe).unwrap();
        let entries = layer_entries(&rootfs.tar().unwrap());
        let (kind, mode, binary) = &entries["usr/local/bin/unit"];
        assert_eq!((*kind, *mode), (tar::EntryType::Regular, 0o755));
        assert!(binary.starts_with(b"\x7fELF"));
        let original = std::fs::metadata(&exe).unwrap().len();
        assert!(
            (binary.len() as u64) < original,
            "debug info stays: {} of {original} bytes",
            binary.len()
        );
        let libraries = shared_libraries(&exe).unwrap();
        let loader = libraries
            .iter()
            .find(|p| p.to_string_lossy().contains("ld-linux"))
            .expect("ldd names the loader");
        for library in &libraries {
            let path = library.to_string_lossy();
            let (kind, _, data) = &entries[path.trim_start_matches('/')];
            assert_eq!(*kind, tar::EntryType::Regular, "{path} must be a real file");
            assert_eq!(data, &std::fs::read(library).unwrap(), "{path}");
        }
        assert!(loader.starts_with("/lib64") || loader.starts_with("/lib"));
        let os_release = String::from_utf8_lossy(&entries["etc/os-release"].2).into_owned();
        assert!(os_release.contains("ID=skiff\n"), "{os_release}");
        assert_eq!(entries["tmp/"].1, 0o1777);
        for dir in ["proc/", "sys/", "dev/", "etc/", "usr/local/bin/"] {
            assert_eq!(entries[dir].0, tar::EntryType::Directory, "{dir}");
        }
    }

    #[test]
    fn busybox_applets_are_symlinks_to_busybox() {
        let mut rootfs = RootFs::base("busybox");
        rootfs.busybox().unwrap();
        let entries = layer_entries(&rootfs.tar().unwrap());
        assert_eq!(entries["bin/busybox"].0, tar::EntryType::Regular);
        for applet in ["sh", "cat", "ls", "wget", "nslookup", "sleep", "env", "ip"] {
            let path = format!("bin/{applet}");
            assert_eq!(entries[&path].0, tar::EntryType::Symlink, "{path}");
        }
        let layer = rootfs.tar().unwrap();
        let mut archive = tar::Archive::new(layer.as_slice());
        let sh = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("bin/sh"))
            .unwrap();
        assert_eq!(sh.link_name().unwrap().unwrap().to_str(), Some("busybox"));
    }

    #[test]
    fn ldd_output_parses_into_paths_and_a_missing_library_is_an_error() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }
}
