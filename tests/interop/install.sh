#!/bin/sh
# Installs what the interop tests (tests/tests/interop.rs, tests/tests/lava_run.rs) need on a
# Debian machine, as root:
#   - Debian's reference coordinator (package lava-coordinator, /usr/bin/lava-coordinator);
#   - the Python modules the real LAVA client imports;
#   - lava-dispatcher itself, only extracted (not installed) into $LAVA_DISPATCHER_CLIENT_DIR
#     (default /opt/lava-dispatcher-client): the tests import
#     lava_dispatcher.protocols.multinode.MultinodeProtocol from there;
#   - for the real LAVA jobs (tests/interop/lava-run/): lava-dispatcher installed (lava-run,
#     without recommends), openssh-server (the nodes' "devices"; the install starts no
#     sshd service), and lava-server only extracted (not installed) into $LAVA_SERVER_EXTRACT_DIR
#     (default /opt/lava-server-extract): the harness uses its job splitting and device-type
#     templates.
# Idempotent: it does nothing when everything is already there, and runs `apt-get update`
# at most once. No service is left running: the tests start the reference themselves on
# free loopback ports.
set -eu

CLIENT_DIR="${LAVA_DISPATCHER_CLIENT_DIR:-/opt/lava-dispatcher-client}"
SERVER_DIR="${LAVA_SERVER_EXTRACT_DIR:-/opt/lava-server-extract}"
PACKAGES="lava-coordinator lava-common python3-pexpect python3-yaml python3-requests \
python3-jinja2 python3-voluptuous python3-configobj python3-tz python3-setproctitle"
# Installed without their recommends (lava-dispatcher recommends a lab's worth of tools).
PACKAGES_NO_RECOMMENDS="lava-dispatcher openssh-server"
SPLIT_PY="$SERVER_DIR/usr/lib/python3/dist-packages/lava_scheduler_app/utils.py"
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
missing_nr=""
for p in $PACKAGES_NO_RECOMMENDS; do
    installed "$p" || missing_nr="$missing_nr $p"
done
coordinator_was_installed=yes
installed lava-coordinator || coordinator_was_installed=no

if [ -n "$missing$missing_nr" ]; then
    echo "install.sh: installing$missing$missing_nr"
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
    if [ -n "$missing" ]; then
        apt-get install -y $missing || status=$?
    fi
    if [ "$status" = 0 ] && [ -n "$missing_nr" ]; then
        apt-get install -y --no-install-recommends $missing_nr || status=$?
    fi
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
    # Likewise the dispatcher's worker, which would try to reach a lava-server (the lava-run
    # harness runs lava-run itself, and its own sshd instances on free loopback ports).
    case "$missing_nr" in
    *lava-dispatcher*|*openssh-server*)
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now lava-worker.service >/dev/null 2>&1 || true
        fi
        ;;
    esac
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

if [ -f "$SPLIT_PY" ]; then
    echo "install.sh: lava-server already extracted in $SERVER_DIR"
else
    echo "install.sh: extracting lava-server into $SERVER_DIR"
    apt_update_once
    stmp="$(mktemp -d)"
    chown _apt "$stmp" 2>/dev/null || true
    (cd "$stmp" && apt-get download lava-server)
    mkdir -p "$SERVER_DIR"
    dpkg-deb -x "$stmp"/lava-server_*.deb "$SERVER_DIR"
    rm -rf "$stmp"
fi

# Check that the real client imports, as the tests will run it.
PYTHONPATH="$CLIENT_DIR/usr/lib/python3/dist-packages" /usr/bin/python3 -c \
    'from lava_dispatcher.protocols.multinode import MultinodeProtocol' \
    || { echo "install.sh: MultinodeProtocol does not import from $CLIENT_DIR" >&2; exit 1; }
command -v lava-run >/dev/null 2>&1 \
    || { echo "install.sh: lava-run is missing after installing lava-dispatcher" >&2; exit 1; }
[ -x /usr/sbin/sshd ] \
    || { echo "install.sh: /usr/sbin/sshd is missing after installing openssh-server" >&2; exit 1; }
echo "install.sh: interop test dependencies are ready"
