#!/usr/bin/env bash
# Builds the rolegate container image without a Docker daemon or a registry (`make image`):
#
#   1. the release binary (`cargo build --release --bin rolegate`), unless ROLEGATE_BIN names one;
#   2. a minimal Debian root filesystem from Debian packages with mmdebstrap (variant `extract`:
#      no package manager and no maintainer scripts in the image): libc6 and libgcc-s1 for the
#      binary, ca-certificates for AWS endpoints, and iproute2 plus busybox's `sh` for the agent's
#      init container, which adds the link-local address (charts/rolegate/templates/agent.yaml);
#   3. an OCI image layout with umoci: that root filesystem as one layer, the binary at
#      /usr/local/bin/rolegate as a second, user 65532:65532, entrypoint `rolegate`, the
#      org.opencontainers.image.* labels; and the same image as an oci-archive with skopeo.
#
# The Dockerfile produces the same layout from debian:bookworm-slim for people with Docker.
# Nothing in the image writes outside /tmp, so it runs with a read-only root filesystem
# (`rolegate serve` keeps its state in --state-dir; give it an emptyDir or /tmp).
#
#   scripts/image.sh                      # -> target/image (layout, tag = crate version)
#   ROLEGATE_BIN=path scripts/image.sh    # package an existing binary
#   IMAGE_OUT=dir IMAGE_TAG=tag DEBIAN_MIRROR=url DEBIAN_SUITE=bookworm scripts/image.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null || {
    echo "image: $tool is missing (apt-get install -y mmdebstrap umoci skopeo)" >&2
    exit 1
  }
done

out="${IMAGE_OUT:-target/image}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
tag="${IMAGE_TAG:-$version}"
arch="$(dpkg --print-architecture)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

bin="${ROLEGATE_BIN:-}"
if [ -z "$bin" ]; then
  nice "${CARGO:-cargo}" build --release --locked --bin rolegate
  bin=target/release/rolegate
fi
[ -x "$bin" ] || { echo "image: $bin is not an executable" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/rolegate-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The root filesystem, as a directory; then what maintainer scripts would have added (the CA
# bundle, /bin/sh), the users, and without what nothing in the image reads (docs, locales,
# iconv modules, debconf and its perl, the openssl tool and libraries ca-certificates' scripts
# use, package-manager state). rolegate links no OpenSSL (rustls with aws-lc-rs), nor does `ip`.
rootfs="$work/rootfs"
mmdebstrap --quiet --variant=extract --mode="${MMDEBSTRAP_MODE:-auto}" --architectures="$arch" \
  --include=libc6,libgcc-s1,ca-certificates,busybox,iproute2 \
  "$suite" "$rootfs" "$mirror"
ln -sf busybox "$rootfs/bin/sh"
mkdir -p "$rootfs/etc/ssl/certs"
cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian,bash-completion,pixmaps,initramfs-tools} \
  "$rootfs"/usr/share/perl* "$rootfs"/usr/lib/*/perl* "$rootfs"/usr/bin/perl* "$rootfs"/usr/lib/*/gconv \
  "$rootfs"/usr/bin/debconf* "$rootfs"/usr/share/debconf "$rootfs"/etc/debconf.conf \
  "$rootfs"/usr/bin/openssl "$rootfs"/usr/bin/c_rehash "$rootfs"/usr/lib/*/libssl.so* \
  "$rootfs"/usr/lib/*/libcrypto.so* "$rootfs"/usr/lib/*/engines-3 "$rootfs"/usr/lib/*/ossl-modules \
  "$rootfs"/etc/{apt,dpkg,hostname,resolv.conf} "$rootfs"/var/{lib/apt,cache/apt,lib/dpkg,log} \
  "$rootfs"/dev
mkdir -p "$rootfs/dev" "$rootfs/proc" "$rootfs/sys"
chmod 1777 "$rootfs/tmp"
tar --numeric-owner --sort=name -C "$rootfs" -cf "$work/rootfs.tar" .

rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci raw add-layer --image "$out:$tag" --history.created_by "mmdebstrap $suite (scripts/image.sh)" \
  "$work/rootfs.tar"
mkdir -p "$work/bin/usr/local/bin"
install -m 0755 "$bin" "$work/bin/usr/local/bin/rolegate"
umoci insert --image "$out:$tag" --history.created_by "rolegate $version (scripts/image.sh)" \
  "$work/bin/usr/local/bin/rolegate" /usr/local/bin/rolegate
umoci config --image "$out:$tag" \
  --os linux --architecture "$arch" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/rolegate \
  --config.workingdir / \
  --clear=config.env \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label org.opencontainers.image.title=rolegate \
  --config.label "org.opencontainers.image.description=Kubernetes operator and SAML IdP for AWS STS" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.created=$created" \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --config.label org.opencontainers.image.source=https://github.com/rolegate/rolegate \
  --config.label "org.opencontainers.image.base.name=debian:$suite (mmdebstrap)" \
  --history.created_by "config (scripts/image.sh)"
umoci gc --layout "$out"

if command -v skopeo >/dev/null; then
  skopeo copy --quiet "oci:$out:$tag" "oci-archive:$out.tar:rolegate:$tag"
fi

# Sizes, for BENCHMARKS.md: what a node pulls (the compressed layers) and what it unpacks.
index="$(jq -r '.manifests[0].digest' "$out/index.json" | sed 's,:,/,')"
pulled="$(jq '[.layers[].size] | add' "$out/blobs/$index")"
unpacked="$(tar tvf "$work/rootfs.tar" | awk '{s+=$3} END {print s}')"
echo "image: $out:$tag ($arch)"
echo "image: compressed layers $((pulled / 1024)) KiB; unpacked: root filesystem $((unpacked / 1024)) KiB + binary $(($(stat -c %s "$bin") / 1024)) KiB"
if [ -f "$out.tar" ]; then echo "image: archive $out.tar ($(($(stat -c %s "$out.tar") / 1024)) KiB)"; fi
