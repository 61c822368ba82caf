#!/usr/bin/env bash
# Builds a Debian bookworm Vagrant box for the libvirt provider, without downloading any box:
# debootstrap a root file system, add what Vagrant needs (a `vagrant` user with passwordless sudo
# and Vagrant's insecure key), and lay it on a disk image with syslinux on a FAT boot partition
# and an ext4 root, made as files (no loop devices or mounts). The kernel comes from
# bookworm-backports: it has BTF and bpf_sock_destroy, which the eBPF proxy uses.
#
# usage: build-box.sh WORKDIR OUT.box
set -euo pipefail

work=$1
out=$2
mirror=${SKIFF_BOX_MIRROR:-http://deb.debian.org/debian}
rootfs=$work/rootfs
rm -rf "$work"
mkdir -p "$work"

packages=systemd-sysv,udev,dbus,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,iptables,nftables,conntrack,curl,rsync,kmod,procps,iputils-ping,ca-certificates,less,netbase,bpftool,containerd,runc,docker-registry,containernetworking-plugins
echo "box: debootstrap bookworm ($mirror)"
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror"

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

echo "box: kernel from bookworm-backports"
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-backports main
SOURCES
# A small initramfs: the virtio and ext4 modules a libvirt guest boots from (plus SATA/AHCI for
# VirtualBox), not every driver.
mkdir -p "$rootfs/etc/initramfs-tools/conf.d"
echo MODULES=list > "$rootfs/etc/initramfs-tools/conf.d/skiff"
printf '%s\n' virtio_pci virtio_blk virtio_scsi virtio_net ext4 ahci sd_mod \
    >> "$rootfs/etc/initramfs-tools/modules"
in_root apt-get update -q
in_root apt-get install -y -q --no-install-recommends -t bookworm-backports linux-image-amd64
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*

echo "box: vagrant user, ssh, network, console"
in_root useradd --create-home --shell /bin/bash vagrant
echo 'vagrant:vagrant' | in_root chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$rootfs/etc/sudoers.d/vagrant"
chmod 0440 "$rootfs/etc/sudoers.d/vagrant"
key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub | head -n1)
install -d -m 0700 "$rootfs/home/vagrant/.ssh"
install -m 0600 "$key" "$rootfs/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'UseDNS no' > "$rootfs/etc/ssh/sshd_config.d/vagrant.conf"
# Every VM made from this box must not share the host keys made by debootstrap: make them on
# first boot instead.
rm -f "$rootfs"/etc/ssh/ssh_host_*
cat > "$rootfs/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Make SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/ssh-host-keys.service \
    "$rootfs/etc/systemd/system/multi-user.target.wants/ssh-host-keys.service"
cat > "$rootfs/etc/network/interfaces" <<'IFACES'
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
IFACES
echo 'LABEL=skiffroot / ext4 defaults,noatime 0 1' > "$rootfs/etc/fstab"
echo skiff > "$rootfs/etc/hostname"
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"

echo "box: disk image"
boot_mb=128
root_mb=3000
kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n1)
# The FAT knows it starts 2048 sectors into the disk, where syslinux's boot sector looks for it.
mkfs.vfat -h 2048 -C "$work/boot.fat" $((boot_mb * 1024)) >/dev/null
cat > "$work/syslinux.cfg" <<'CFG'
DEFAULT linux
TIMEOUT 1
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img root=LABEL=skiffroot rw console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
CFG
mcopy -i "$work/boot.fat" "$kernel" ::/vmlinuz
mcopy -i "$work/boot.fat" "$initrd" ::/initrd.img
mcopy -i "$work/boot.fat" "$work/syslinux.cfg" ::/syslinux.cfg
mkfs.ext4 -q -L skiffroot -d "$rootfs" "$work/root.ext4" "${root_mb}M"
disk=$work/disk.raw
truncate -s $((1 + boot_mb + root_mb + 1))M "$disk"
sfdisk -q "$disk" <<PARTS
label: dos
start=1MiB, size=${boot_mb}MiB, type=c, bootable
start=$((1 + boot_mb))MiB, size=${root_mb}MiB, type=83
PARTS
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.fat" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.ext4" of="$disk" bs=1M seek=$((1 + boot_mb)) conv=notrunc status=none
syslinux --offset $((1024 * 1024)) --install "$disk"
rm -rf "$rootfs" "$work/boot.fat" "$work/root.ext4"
qemu-img convert -O qcow2 "$disk" "$work/box.img"
rm -f "$disk"
size_gb=$(( (1 + boot_mb + root_mb + 1 + 1023) / 1024 ))
cat > "$work/metadata.json" <<META
{"provider": "libvirt", "format": "qcow2", "virtual_size": $size_gb}
META
cat > "$work/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
VF
tar -C "$work" -czf "$out.tmp" metadata.json Vagrantfile box.img
mv "$out.tmp" "$out"
rm -rf "$work"
echo "box: $out ($(du -h "$out" | cut -f1))"
