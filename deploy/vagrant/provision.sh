#!/usr/bin/env bash
# Installs skiff on one VM and (re)starts its units; Vagrant's shell provisioner runs it as root.
# Safe to run again (`vagrant provision`): files are replaced, the units restarted with the
# settings given, and the control plane's CA and state kept.
#
# Files come from the synced folders Vagrant rsyncs from target/vagrant/dist on the host:
#   /opt/skiff-dist/common   binaries, BPF object, units, demo, containerd's config and the
#                            image registry's storage (every VM)
#   /opt/skiff-dist/node     this node's own kubeconfig (its credentials, minted on the host),
#                            and the DNS add-on's, which its Pods may need on any node
#   /opt/skiff-dist/control  the CA and the token file (the control node only)
#
# Settings, from the environment the Vagrantfile passes: NODE_NAME NODE_IP CONTROL_IP NODES
# PROXY_MODE OVERLAY CLUSTER_CIDR, and ROLE=control|worker.
set -euo pipefail
dist=/opt/skiff-dist
: "${NODE_NAME:?}" "${NODE_IP:?}" "${CONTROL_IP:?}" "${NODES:?}" "${ROLE:?}"
PROXY_MODE=${PROXY_MODE:-iptables}
OVERLAY=${OVERLAY:-vxlan}
CLUSTER_CIDR=${CLUSTER_CIDR:-10.244.0.0/16}

# Boxes other than the one `cargo xtask vagrant up` builds (VirtualBox's debian/bookworm64) may
# lack what the node needs; those have the internet to fetch it.
missing=()
for tool in iptables-restore conntrack curl ip containerd runc docker-registry; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -x /usr/lib/cni/loopback ] || missing+=(cni-plugins)
if [ ${#missing[@]} -gt 0 ]; then
    echo "provision: installing packages for: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        iptables conntrack curl iproute2 containerd runc docker-registry containernetworking-plugins
fi

echo "provision: $NODE_NAME ($ROLE) at $NODE_IP, proxy $PROXY_MODE, overlay $OVERLAY"
install -d /usr/local/bin /usr/local/lib/skiff /usr/lib/skiff /opt/cni/bin /etc/skiff \
    /var/lib/skiff/images/skiff
install -m 0755 "$dist/common/bin/skiff-node" "$dist/common/bin/skiff-control" \
    "$dist/common/bin/kubectl" /usr/local/bin/
install -m 0755 "$dist/common/bin/skiff-cni" /opt/cni/bin/
# containerd runs the CNI plugins from one folder: skiff-cni beside the reference loopback
# (the Pod's lo) and portmap (hostPorts).
ln -sf /usr/lib/cni/loopback /usr/lib/cni/portmap /opt/cni/bin/
install -m 0755 "$dist/common/bin/skiff-test-server" "$dist/common/bin/skiff-dns" \
    "$dist/common/apply-demo.sh" /usr/local/lib/skiff/
install -m 0644 "$dist/common/skiff-lb.bpf.o" /usr/lib/skiff/
install -m 0644 "$dist/common/units/"*.service /etc/systemd/system/
echo '{"entrypoint": ["/usr/local/lib/skiff/skiff-test-server"]}' \
    > /var/lib/skiff/images/skiff/test-server.json
echo '{"entrypoint": ["/usr/local/lib/skiff/skiff-dns"]}' > /var/lib/skiff/images/skiff/dns.json
install -m 0600 "$dist/node/node.kubeconfig" /etc/skiff/node.kubeconfig
# The cluster DNS add-on's credentials, mounted into its Pods (deploy/addons/dns.yaml).
install -m 0600 "$dist/node/dns.kubeconfig" /etc/skiff/dns.kubeconfig
cat > /etc/skiff/skiff-node.env <<ENV
# skiff-node's settings (skiff-node.service); change one and \`systemctl restart skiff-node\`.
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
# iptables or ebpf
PROXY_MODE=$PROXY_MODE
# vxlan or host-gw
OVERLAY=$OVERLAY
CLUSTER_CIDR=$CLUSTER_CIDR
# The kube-dns Service (the DNS add-on), first nameserver of every ClusterFirst Pod.
CLUSTER_DNS=10.96.0.10
# Pods run as containers under containerd; leave empty for the process runtime.
RUNTIME_ARGS=--container-runtime-endpoint unix:///run/containerd/containerd.sock
# More flags, see \`skiff-node --help\`.
EXTRA_ARGS=
ENV
install -d /etc/containerd
install -m 0644 "$dist/common/containerd.toml" /etc/containerd/config.toml
systemctl daemon-reload
systemctl enable containerd.service
systemctl restart containerd.service

if [ "$ROLE" = control ]; then
    install -d -m 0700 /var/lib/skiff/control
    # The CA is made once on the host and kept: every kubeconfig trusts it.
    for file in ca.crt ca.key; do
        [ -e "/var/lib/skiff/control/$file" ] || install -m 0600 "$dist/control/$file" /var/lib/skiff/control/
    done
    # The host's token file is the list of who may call: the server re-reads it when it changes.
    install -m 0600 "$dist/control/tokens.csv" /var/lib/skiff/control/tokens.csv
    cat > /etc/skiff/skiff-control.env <<ENV
# skiff-control's settings (skiff-control.service); change one and \`systemctl restart skiff-control\`.
ADVERTISE_ADDRESS=$CONTROL_IP
CLUSTER_CIDR=$CLUSTER_CIDR
# How many Nodes the demo waits for (skiff-demo.service).
NODES=$NODES
# More flags, see \`skiff-control --help\`.
EXTRA_ARGS=
ENV
    install -m 0644 "$dist/common/demo.yaml" "$dist/common/dns.yaml" /etc/skiff/
    # The image registry every node's containerd pulls from: the images built on the host.
    cat > /etc/docker/registry/config.yml <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
YAML
    rm -rf /var/lib/docker-registry/docker
    cp -a "$dist/common/registry/docker" /var/lib/docker-registry/
    chown -R docker-registry: /var/lib/docker-registry
    systemctl enable docker-registry.service
    systemctl restart docker-registry.service
    systemctl enable skiff-control.service skiff-demo.service
    systemctl restart skiff-control.service
    for _ in $(seq 1 120); do
        curl -sf --cacert /var/lib/skiff/control/ca.crt "https://$CONTROL_IP:6443/readyz" >/dev/null && break
        sleep 1
    done
    curl -sSf --cacert /var/lib/skiff/control/ca.crt "https://$CONTROL_IP:6443/readyz" >/dev/null
    for home in /root /home/vagrant; do
        install -d "$home/.kube"
        install -m 0600 /var/lib/skiff/control/admin.kubeconfig "$home/.kube/config"
    done
    chown -R vagrant: /home/vagrant/.kube 2>/dev/null || true
    # Applies the demo once every Node is Ready; runs in the background.
    systemctl start --no-block skiff-demo.service
fi

systemctl enable skiff-node.service
systemctl restart skiff-node.service
echo "provision: $NODE_NAME done"
