#!/bin/bash
# The demo (as root): tools/demo.sh [--duration SECONDS] [--docker-socket PATH]
#                              [--rabbitmq-url URL --rabbitmq-user U --rabbitmq-password-file F
#                               [--amqp-url URL]] [--burst-every S] [--plain] [--seed N]
#
# On Debian 12 as root: installs what is missing (the same packages as tools/test-all.sh),
# builds sluice if needed, then runs tools/demo.py with Debian's python3: a private Docker
# Engine and RabbitMQ (loopback only), src/sluiced on a demo pool of real Celery workers,
# bursts of tasks, and a live view. Ctrl-C (or --duration) stops it and cleans everything up.
# See docs/demo.md.
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3             # Debian's, with python3-celery; not a pyenv python on PATH

for a in "$@"; do
    case $a in -h|--help) exec "$PY" tools/demo.py --help ;; esac
done

if [ "$(id -u)" != 0 ]; then
    echo "demo: must run as root (it starts dockerd and RabbitMQ): sudo $0" >&2
    exit 1
fi
say() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- packages -----------------------------------------------------------------------
. "$ROOT/tools/deps.sh"
sluice_install_deps demo >&2 || exit 1

# ---- build (only what is missing or out of date) -----------------------------------------
build() {
    if [ ! -f Makefile ]; then
        say "building sluice: autoreconf -fi && ./configure && make"
        mkdir -p m4  # ACLOCAL_AMFLAGS = -I m4; git does not keep empty dirs
        { autoreconf -fi && ./configure --quiet; } > /tmp/sluice-demo-build.$$.log 2>&1 ||
            return 1
    fi
    make -j2 -s src/sluiced src/sluicectl >> /tmp/sluice-demo-build.$$.log 2>&1
}
if ! build; then
    tail -n 40 /tmp/sluice-demo-build.$$.log >&2
    rm -f /tmp/sluice-demo-build.$$.log
    if [ -x src/sluiced ] && [ -x src/sluicectl ]; then
        say "the build failed (above); using the binaries already in src/"
    else
        echo "demo: the build failed" >&2
        exit 1
    fi
fi
rm -f /tmp/sluice-demo-build.$$.log

exec "$PY" tools/demo.py "$@"
