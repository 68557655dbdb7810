#!/bin/sh
# Packs the static target tools for test images, one tarball per target:
#
#     packaging/build-tools-tarballs.sh [TRIPLE ...]
#
# runs packaging/build-static.sh (same arguments: by default x86_64, aarch64 and armv7 musl),
# then writes dist/lava-multinode-<version>-<triple>.tar.gz for every
# dist/<triple>/lava-multinode. Each holds lava-multinode-<version>-<triple>/bin/lava-multinode,
# its lava-* links (relative), and TOOLS.md. Install into an image's /usr/local:
#
#     tar -xzf lava-multinode-<version>-<triple>.tar.gz -C /usr/local --strip-components=1
#
# The link names come from the binary itself (`lava-multinode install`), so they match the
# commands it dispatches on. Set LAVA_MULTINODE_SKIP_BUILD=1 to pack what dist/ holds.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf 'build-tools-tarballs: %s\n' "$*" >&2; }

if [ "${LAVA_MULTINODE_SKIP_BUILD:-0}" != 1 ]; then
    sh packaging/build-static.sh "$@"
fi

# The version and the link names, from a binary this machine runs (the host's own target).
host_bin=""
for candidate in "$ROOT"/dist/*/lava-multinode; do
    if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
        host_bin=$candidate
        break
    fi
done
if [ -z "$host_bin" ]; then
    say "ERROR: no dist/<triple>/lava-multinode runs on this machine; run packaging/build-static.sh"
    exit 1
fi
version=$("$host_bin" --version | awk '{print $2}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/links"
"$host_bin" install "$work/links" >/dev/null
names=$(cd "$work/links" && find . -maxdepth 1 -type l -name 'lava-*' | sed 's|^\./||' | sort)
if [ -z "$names" ]; then
    say "ERROR: '$host_bin install' created no links"
    exit 1
fi

# Reproducible archives: fixed owner, order and dates (the commit's date when in git).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
for bin in "$ROOT"/dist/*/lava-multinode; do
    triple=$(basename "$(dirname "$bin")")
    name="lava-multinode-$version-$triple"
    mkdir -p "$work/$name/bin"
    cp "$bin" "$work/$name/bin/lava-multinode"
    chmod 755 "$work/$name/bin/lava-multinode"
    for link in $names; do
        ln -s lava-multinode "$work/$name/bin/$link"
    done
    cp "$ROOT/docs/TOOLS.md" "$work/$name/TOOLS.md"
    out="$ROOT/dist/$name.tar.gz"
    tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -cf - "$name" | gzip -9n >"$out.tmp"
    mv "$out.tmp" "$out"
    say "$out ($(wc -c <"$out") bytes)"
    echo "$out"
done
