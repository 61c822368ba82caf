//! A local OCI registry (Debian's `docker-registry`, distribution 2.8) and a push client.
//!
//! The registry serves plain HTTP inside a namespace of the run, so its sockets — and the
//! client's — must live there: every request opens its TCP connection from a thread that has
//! entered the namespace ([`Netns::run`]) and then talks over it from the caller's thread (a
//! socket stays in the namespace it was made in). The client is a few lines of HTTP/1.1, one
//! request per connection, like [`crate::wait::http_get`]: a push needs statuses, two headers
//! and `Content-Length` bodies, nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{CONFIG_MEDIA_TYPE, Image, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::{Netns, Process, Run};

/// How long the registry gets to answer `GET /v2/` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// A bound on each connect, read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A `docker-registry` serving HTTP (no TLS) inside a namespace, its storage in the run's
/// scratch folder; stopped when dropped, and with the run in any case. One per run.
#[derive(Debug)]
pub struct Registry {
    process: Process,
    netns: Netns,
    addr: SocketAddr,
    storage: PathBuf,
}

impl Registry {
    /// Starts the registry on `addr` inside `netns`; returns once `GET /v2/` answers 200.
    pub fn start(run: &Run, netns: &Netns, addr: SocketAddr) -> Result<Registry> {
        let dir = run.scratch_dir("registry")?;
        let config = dir.join("config.yml");
        ensure!(
            !config.exists(),
            "run {} already has a registry ({})",
            run.id(),
            config.display()
        );
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .with_context(|| format!("cannot create {}", storage.display()))?;
        std::fs::write(&config, config_yaml(&storage, addr))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let config = config.to_string_lossy();
        let process = Process::spawn(
            run,
            netns,
            "registry",
            &["docker-registry", "serve", &config],
            &[],
        )?;
        let mut registry = Registry {
            process,
            netns: netns.clone(),
            addr,
            storage,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Where it listens (inside its namespace).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder that holds its blobs and repositories.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Its log so far: warnings and errors (each HEAD of a missing blob logs a "blob unknown"
    /// error, which is how a push asks), and one access-log line per request.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Leaves it running after the handle is gone (for detached runs); the run still stops it.
    pub fn release(self) {
        self.process.release();
    }

    /// Pushes every blob not already there (HEAD first) and the manifest under the image's tag;
    /// returns the manifest digest the registry reports.
    pub fn push(&self, image: &Image) -> Result<String> {
        let manifest = image.manifest();
        let repository = image.repository();
        let config = image.config_bytes();
        for (media_type, bytes, digest) in [
            (CONFIG_MEDIA_TYPE, &config, &manifest.config.digest),
            (LAYER_MEDIA_TYPE, &image.layer, &manifest.layer.digest),
        ] {
            self.push_blob(repository, digest, bytes)
                .with_context(|| format!("pushing {media_type} {digest} of {}", image.reference))?;
        }
        let target = format!("/v2/{repository}/manifests/{}", image.tag());
        let reply = self.request(
            "PUT",
            &target,
            &[("Content-Type", MANIFEST_MEDIA_TYPE)],
            &manifest.bytes,
        )?;
        reply.expect("PUT", &target, 201)?;
        let digest = reply
            .header("Docker-Content-Digest")
            .with_context(|| format!("PUT {target}: no Docker-Content-Digest in the answer"))?;
        ensure!(
            digest == manifest.digest,
            "PUT {target}: the registry computed {digest}, we computed {}",
            manifest.digest
        );
        Ok(digest.to_owned())
    }

    /// Uploads one blob unless the repository already has it (a monolithic POST + PUT upload).
    fn push_blob(&self, repository: &str, digest: &str, bytes: &[u8]) -> Result<()> {
        let blob = format!("/v2/{repository}/blobs/{digest}");
        let head = self.request("HEAD", &blob, &[], &[])?;
        if head.status == 200 {
            return Ok(());
        }
        head.expect("HEAD", &blob, 404)?;
        let uploads = format!("/v2/{repository}/blobs/uploads/");
        let started = self.request("POST", &uploads, &[], &[])?;
        started.expect("POST", &uploads, 202)?;
        let location = started
            .header("Location")
            .with_context(|| format!("POST {uploads}: no Location in the answer"))?;
        let target = upload_target(location, &uploads, digest);
        let done = self.request(
            "PUT",
            &target,
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )?;
        done.expect("PUT", &target, 201)
    }

    /// One HTTP/1.1 request over a connection made inside the registry's namespace.
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let addr = self.addr;
        let mut stream = self.netns.run(move || {
            TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .with_context(|| format!("cannot connect to the registry at {addr}"))
        })?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             User-Agent: skiff-harness\r\n"
        );
        if matches!(method, "POST" | "PUT") || !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Vec::new();
        (|| {
            stream.write_all(head.as_bytes())?;
            stream.write_all(body)?;
            stream.read_to_end(&mut raw)
        })()
        .with_context(|| format!("{method} {target} to the registry at {addr}"))?;
        parse_response(&raw, method == "HEAD")
            .with_context(|| format!("{method} {target}: a malformed answer"))
    }

    /// Polls `GET /v2/` until it answers 200; fails at once, with its log, if the registry exits.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "the registry exited ({status}) while starting; its log:\n{}",
                    self.log()
                );
            }
            let last = match self.request("GET", "/v2/", &[], &[]) {
                Ok(reply) if reply.status == 200 => return Ok(()),
                Ok(reply) => format!("GET /v2/ answered {}", reply.status),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the registry at {} is not ready after {START_TIMEOUT:?} ({last}); its log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The registry's configuration: filesystem storage, deletes allowed, warnings only. The
/// secret only signs upload state between requests; fixed, as this registry stands alone.
fn config_yaml(storage: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: skiff-harness-registry\n",
        storage.display()
    )
}

/// Where to PUT the blob: the upload's `Location` (absolute URL, absolute path, or relative
/// to the uploads folder) with `digest=` added to its query.
fn upload_target(location: &str, uploads: &str, digest: &str) -> String {
    let path = if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..]).to_owned()
    } else if location.starts_with('/') {
        location.to_owned()
    } else {
        format!("{uploads}{location}")
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}digest={}", digest.replace(':', "%3A"))
}

/// A parsed HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Fails, with the registry's status and body, unless the status is `status`.
    fn expect(&self, method: &str, target: &str, status: u16) -> Result<()> {
        ensure!(
            self.status == status,
            "{method} {target}: the registry answered {} (wanted {status}): {}",
            self.status,
            String::from_utf8_lossy(&self.body).trim()
        );
        Ok(())
    }
}

/// Parses a whole answer (the server closed the connection after it).
fn parse_response(raw: &[u8], head_only: bool) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    ensure!(
        parts.next().is_some_and(|v| v.starts_with("HTTP/1.")),
        "not an HTTP answer: {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if head_only {
        return Ok(response);
    }
    response.body = if response
        .header("Transfer-Encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(length) = response.header("Content-Length") {
        let length: usize = length.parse().context("bad Content-Length")?;
        ensure!(
            rest.len() >= length,
            "body cut short: {} of {length} bytes",
            rest.len()
        );
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// Joins a chunked body's chunks.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line without end")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(rest.len() >= size + 2, "chunk cut short");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_length_chunked_and_head_bodies() {
        let raw = b"HTTP/1.1 202 Accepted\r\nLocation: /v2/x/blobs/uploads/u?_state=s\r\n\
                    Content-Length: 2\r\nDocker-Upload-Uuid: u\r\n\r\nokEXTRA";
        let reply = parse_response(raw, false).unwrap();
        assert_eq!(reply.status, 202);
        assert_eq!(
            reply.header("location"),
            Some("/v2/x/blobs/uploads/u?_state=s")
        );
        assert_eq!(reply.body, b"ok");

        let raw = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap().body, b"hello world");

        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
        assert_eq!(parse_response(raw, true).unwrap().body, b"");
        assert!(
            parse_response(raw, false).is_err(),
            "a short body is an error"
        );
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n", false).is_err());
    }

    #[test]
    fn errors_carry_the_status_and_the_registry_body() {
        let reply = parse_response(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 29\r\n\r\n{\"errors\":[\"DIGEST_INVALID\"]}",
            false,
        );
        let err = reply.unwrap().expect("PUT", "/v2/x", 201).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("400") && text.contains("DIGEST_INVALID"),
            "{text}"
        );
    }

    #[test]
    fn upload_locations_absolute_or_relative_get_the_digest_added() {
        let uploads = "/v2/skiff/busybox/blobs/uploads/";
        assert_eq!(
            upload_target(
                "http://127.0.0.1:5000/v2/skiff/busybox/blobs/uploads/u1?_state=abc",
                uploads,
                "sha256:00ff"
            ),
            "/v2/skiff/busybox/blobs/uploads/u1?_state=abc&digest=sha256%3A00ff"
        );
        assert_eq!(
            upload_target("/v2/skiff/busybox/blobs/uploads/u2", uploads, "sha256:00ff"),
            "/v2/skiff/busybox/blobs/uploads/u2?digest=sha256%3A00ff"
        );
        assert_eq!(
            upload_target("u3?_state=s", uploads, "sha256:00ff"),
            "/v2/skiff/busybox/blobs/uploads/u3?_state=s&digest=sha256%3A00ff"
        );
    }

    #[test]
    fn the_config_names_storage_address_and_allows_deletes() {
        let yaml = config_yaml(
            Path::new("/run/x/storage"),
            "127.0.0.1:5000".parse().unwrap(),
        );
        assert!(yaml.starts_with("version: 0.1\n"));
        assert!(
            yaml.contains("    rootdirectory: /run/x/storage\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  delete:\n    enabled: true\n"), "{yaml}");
        assert!(yaml.contains("http:\n  addr: 127.0.0.1:5000\n"), "{yaml}");
        assert!(yaml.contains("log:\n  level: warn\n"), "{yaml}");
    }
}
