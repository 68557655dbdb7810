#!/bin/sh
# Installs what the interop tests (tests/tests/interop.rs) need on a Debian machine, as root:
#   - Debian's reference coordinator (package lava-coordinator, /usr/bin/lava-coordinator);
#   - the Python modules the real LAVA client imports;
#   - lava-dispatcher itself, only extracted (not installed) into $LAVA_DISPATCHER_CLIENT_DIR
#     (default /opt/lava-dispatcher-client): the tests import
#     lava_dispatcher.protocols.multinode.MultinodeProtocol from there.
# Idempotent: it does nothing when everything is already there, and runs `apt-get update`
# at most once. No service is left running: the tests start the reference themselves on
# free loopback ports.
set -eu

CLIENT_DIR="${LAVA_DISPATCHER_CLIENT_DIR:-/opt/lava-dispatcher-client}"
PACKAGES="lava-coordinator lava-common python3-pexpect python3-yaml python3-requests \
python3-jinja2 python3-voluptuous python3-configobj python3-tz python3-setproctitle"
MULTINODE_PY="$CLIENT_DIR/usr/lib/python3/dist-packages/lava_dispatcher/protocols/multinode.py"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run me as root (apt-get install)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

updated=no
apt_update_once() {
    if [ "$updated" = no ]; then
        apt-get update
        updated=yes
    fi
}

missing=""
for p in $PACKAGES; do
    installed "$p" || missing="$missing $p"
done
coordinator_was_installed=yes
installed lava-coordinator || coordinator_was_installed=no

if [ -n "$missing" ]; then
    echo "install.sh: installing$missing"
    apt_update_once
    # Keep the packages' maintainer scripts from starting lava-coordinator on port 3079
    # (on a machine without systemd, or with one): the tests start their own instances.
    own_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=yes
    fi
    status=0
    # shellcheck disable=SC2086
    apt-get install -y $missing || status=$?
    if [ "$own_policy" = yes ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [ "$status" = 0 ] || exit "$status"
    # If this run installed the coordinator and a service manager enabled or started it
    # anyway, stop it: a reference on 3079 would answer whatever talks to the default port.
    if [ "$coordinator_was_installed" = no ] && [ -d /run/systemd/system ] \
        && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now lava-coordinator.service >/dev/null 2>&1 || true
    fi
else
    echo "install.sh: Debian packages already installed"
fi

if [ -f "$MULTINODE_PY" ]; then
    echo "install.sh: lava-dispatcher already extracted in $CLIENT_DIR"
else
    echo "install.sh: extracting lava-dispatcher into $CLIENT_DIR"
    apt_update_once
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # apt-get download writes into the current folder, as the _apt user when it can.
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get download lava-dispatcher)
    mkdir -p "$CLIENT_DIR"
    dpkg-deb -x "$tmp"/lava-dispatcher_*.deb "$CLIENT_DIR"
fi

# Check that the real client imports, as the tests will run it.
PYTHONPATH="$CLIENT_DIR/usr/lib/python3/dist-packages" /usr/bin/python3 -c \
    'from lava_dispatcher.protocols.multinode import MultinodeProtocol' \
    || { echo "install.sh: MultinodeProtocol does not import from $CLIENT_DIR" >&2; exit 1; }
echo "install.sh: interop test dependencies are ready"
