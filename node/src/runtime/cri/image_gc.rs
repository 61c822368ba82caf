//! Image garbage collection, as kubelet's image manager does it: when the filesystem that holds
//! the images is fuller than the high threshold, images no container uses (and not the sandbox
//! image, which every Pod needs) are removed until it is back under the low threshold. The
//! choice ([`to_remove`]) is pure and tested here; [`CriRuntime::collect_unused_images`] lists,
//! measures and removes.

use k8s_cri::v1 as cri;

use super::{CALL_TIMEOUT, CriRuntime};
use crate::runtime::RuntimeError;

/// An image the runtime holds.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldImage {
    /// Its id (`sha256:...`).
    pub id: String,
    /// Its tags and digests.
    pub names: Vec<String>,
    /// Its size in bytes.
    pub size: u64,
}

/// How full the image filesystem is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FsUsage {
    /// Bytes in use on it.
    pub used: u64,
    /// Its size.
    pub capacity: u64,
}

/// The ids to remove, largest first, so that `usage` falls to `low_percent` of capacity — none
/// while it is at or under `high_percent`. `in_use` are image ids and names containers run;
/// `pinned` names are never removed.
pub fn to_remove(
    images: &[HeldImage],
    in_use: &[String],
    pinned: &[String],
    usage: FsUsage,
    high_percent: u8,
    low_percent: u8,
) -> Vec<String> {
    let percent = |bytes: u64| bytes as u128 * 100 / u128::from(usage.capacity.max(1));
    if percent(usage.used) <= u128::from(high_percent) {
        return Vec::new();
    }
    let mut candidates: Vec<&HeldImage> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id) && !i.names.iter().any(|n| in_use.contains(n)))
        .filter(|i| !i.names.iter().any(|n| pinned.contains(n)))
        .collect();
    candidates.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    let mut used = usage.used;
    let mut chosen = Vec::new();
    for image in candidates {
        if percent(used) <= u128::from(low_percent) {
            break;
        }
        used = used.saturating_sub(image.size);
        chosen.push(image.id.clone());
    }
    chosen
}

impl CriRuntime {
    /// Image GC through CRI: measures the image filesystem (ImageFsInfo, statvfs), lists images
    /// and containers, and removes what [`to_remove`] picks.
    pub(super) fn collect_unused_images(
        &self,
        high_percent: u8,
        low_percent: u8,
    ) -> Result<Vec<String>, RuntimeError> {
        let mut client = self.images.clone();
        let filesystems = self
            .wait(
                "ImageFsInfo",
                CALL_TIMEOUT,
                client.image_fs_info(cri::ImageFsInfoRequest::default()),
            )?
            .image_filesystems;
        let Some(mountpoint) = filesystems
            .iter()
            .find_map(|f| f.fs_id.as_ref().map(|id| id.mountpoint.clone()))
        else {
            return Ok(Vec::new());
        };
        let fs = nix::sys::statvfs::statvfs(mountpoint.as_str()).map_err(|e| RuntimeError::Io {
            what: format!("cannot measure {mountpoint}"),
            source: std::io::Error::from(e),
        })?;
        let block = fs.fragment_size() as u64;
        let usage = FsUsage {
            used: (fs.blocks() as u64).saturating_sub(fs.blocks_free() as u64) * block,
            capacity: fs.blocks() as u64 * block,
        };
        let mut client = self.images.clone();
        let held: Vec<HeldImage> = self
            .wait(
                "ListImages",
                CALL_TIMEOUT,
                client.list_images(cri::ListImagesRequest::default()),
            )?
            .images
            .into_iter()
            .filter(|i| !i.pinned)
            .map(|i| HeldImage {
                id: i.id,
                names: i.repo_tags.into_iter().chain(i.repo_digests).collect(),
                size: i.size,
            })
            .collect();
        let mut client = self.runtime.clone();
        let in_use: Vec<String> = self
            .wait(
                "ListContainers",
                CALL_TIMEOUT,
                client.list_containers(cri::ListContainersRequest::default()),
            )?
            .containers
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image.map(|i| i.image).unwrap_or_default()])
            .filter(|r| !r.is_empty())
            .collect();
        let chosen = to_remove(
            &held,
            &in_use,
            &self.pinned_images,
            usage,
            high_percent,
            low_percent,
        );
        for id in &chosen {
            let mut client = self.images.clone();
            let request = cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
            };
            self.wait("RemoveImage", CALL_TIMEOUT, client.remove_image(request))?;
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, name: &str, size: u64) -> HeldImage {
        HeldImage {
            id: id.into(),
            names: vec![name.into()],
            size,
        }
    }

    #[test]
    fn unused_images_go_largest_first_until_under_the_low_threshold() {
        let images = [
            image("sha256:a", "app:v1", 30),
            image("sha256:b", "app:v2", 10),
            image("sha256:c", "busybox", 20),
            image("sha256:p", "pause", 5),
        ];
        let in_use = vec!["app:v2".to_owned()];
        let pinned = vec!["pause".to_owned()];
        let full = FsUsage {
            used: 90,
            capacity: 100,
        };
        assert_eq!(
            to_remove(&images, &in_use, &pinned, full, 85, 70),
            ["sha256:a"],
            "90 - 30 = 60 is under 70"
        );
        assert_eq!(
            to_remove(&images, &in_use, &pinned, full, 85, 0),
            ["sha256:a", "sha256:c"],
            "never the one in use, never the pinned one"
        );
        let roomy = FsUsage {
            used: 50,
            capacity: 100,
        };
        assert!(to_remove(&images, &in_use, &pinned, roomy, 85, 0).is_empty());
    }
}
