# Sourced by tools/test-all.sh and tools/demo.sh: the Debian packages sluice builds, tests and
# demos with, and how they are installed on a fresh Debian 12 (as root).

SLUICE_PKGS=(autoconf automake libtool pkg-config libcurl4-openssl-dev librabbitmq-dev
             libconfig-dev libsystemd-dev libjansson-dev libcmocka-dev docker.io rabbitmq-server
             python3-pytest python3-celery busybox-static)

# Install whichever of SLUICE_PKGS is missing (nothing, and no apt-get, when all are there).
# $1 says what is installing (for messages). Prints what it does; on failure shows the tail of
# apt's log on stderr and returns 1.
sluice_install_deps() {
    local who=$1 p missing=() made_policy= rc log
    for p in "${SLUICE_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "$who: packages already installed"
        return 0
    fi
    echo "$who: installing ${missing[*]} (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    # Installing docker.io/rabbitmq-server must not start the system services.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    log=$(mktemp /tmp/sluice-apt.XXXXXX)
    apt-get update -qq > "$log" 2>&1 &&
        apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >> "$log" 2>&1
    rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    if [ $rc -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "$who: apt-get failed" >&2
    fi
    rm -f "$log"
    return $(( rc != 0 ))
}
