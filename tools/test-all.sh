#!/bin/bash
# The test command (as root): tools/test-all.sh
#
# On Debian 12 as root: installs what is missing, builds in tree, runs the unit tests
# (make check) and the integration tests (Debian's pytest against a private dockerd,
# RabbitMQ and real Celery workers), and prints as its LAST line
#     N passed, N failed[, N skipped]
# summed over both. Exit status: 0 only if the build worked and nothing failed or errored.
# Both suites always run; a failure in one does not stop the other.
# Environment: CI=true makes an unavailable test bed a failure instead of a skip;
# PYTEST_ARGS adds arguments to pytest (e.g. PYTEST_ARGS="-k smoke").
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3             # Debian's, with python3-celery; not a pyenv python on PATH
START=$(date +%s)
note() { printf '\n=== [test-all %ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

passed=0 failed=0 skipped=0 build_ok=1
extra_fail() { failed=$((failed + 1)); echo "test-all: FAILURE: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "test-all: must run as root (the test bed starts dockerd and RabbitMQ): sudo $0" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- packages ------------------------------------------------------------------------
. "$ROOT/tools/deps.sh"
if ! sluice_install_deps test-all; then
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- build ---------------------------------------------------------------------------
note "build: autoreconf -fi && ./configure && make -j2"
mkdir -p m4  # ACLOCAL_AMFLAGS = -I m4; git does not keep empty dirs
if ! { autoreconf -fi && ./configure --quiet && make -j2; }; then
    build_ok=0
    extra_fail "build failed"
fi

# ---- unit tests ----------------------------------------------------------------------
if [ $build_ok = 1 ]; then
    note "unit tests: make check"
    rm -f test-suite.log
    timeout -k 10 300 make -j2 check
    check_rc=$?
    if [ -f test-suite.log ]; then
        count() { sed -n "s/^# $1: *\([0-9][0-9]*\).*/\1/p" test-suite.log | head -n1; }
        u_pass=$(count PASS) u_fail=$(count FAIL) u_skip=$(count SKIP)
        u_xfail=$(count XFAIL) u_xpass=$(count XPASS) u_error=$(count ERROR)
        u_pass=${u_pass:-0} u_fail=${u_fail:-0} u_skip=${u_skip:-0}
        u_xfail=${u_xfail:-0} u_xpass=${u_xpass:-0} u_error=${u_error:-0}
        passed=$((passed + u_pass))
        failed=$((failed + u_fail + u_error + u_xpass))
        skipped=$((skipped + u_skip + u_xfail))   # a known bug is not a pass
        echo "test-all: unit: pass $u_pass, fail $u_fail, error $u_error, skip $u_skip," \
             "xfail $u_xfail, xpass $u_xpass (make check exit $check_rc)"
        if [ $check_rc -ne 0 ] && [ $((u_fail + u_error + u_xpass)) -eq 0 ]; then
            extra_fail "make check exited $check_rc with no failed test counted"
        fi
        grep -E '^(FAIL|ERROR|XPASS)' test-suite.log | head -n 50
    else
        extra_fail "make check exited $check_rc and wrote no test-suite.log (a test did not build?)"
    fi
fi

# ---- integration tests ---------------------------------------------------------------
note "integration tests: $PY -m pytest tests/integration"
tmp=$(mktemp -d /tmp/sluice-test-all.XXXXXX)
# Everything this run's bed creates lives under $tmp/t (TMPDIR), so leftovers are ours to see.
mkdir -p "$tmp/t" && chmod 755 "$tmp" "$tmp/t"   # the rabbitmq user walks through it
# pytest gets SIGTERM on timeout; the bed turns it into an orderly teardown
# shellcheck disable=SC2086
TMPDIR="$tmp/t" timeout -k 30 1200 "$PY" -m pytest tests/integration -rA -p no:cacheprovider \
    --basetemp="$tmp/basetemp" --junitxml="$tmp/junit.xml" ${PYTEST_ARGS:-}
py_rc=$?
if [ -f "$tmp/junit.xml" ]; then
    read -r i_pass i_fail i_skip < <("$PY" - "$tmp/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
cases = {}
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    key = (tc.get("classname"), tc.get("name"))
    if tc.find("failure") is not None or tc.find("error") is not None:
        state = "fail"
    elif tc.find("skipped") is not None:
        state = "skip"  # skipped, or xfail: a known bug is not a pass
    else:
        state = "pass"
    # a test with an error at teardown appears twice: failure wins
    if cases.get(key) != "fail":
        cases[key] = state
vals = list(cases.values())
print(vals.count("pass"), vals.count("fail"), vals.count("skip"))
EOF
    )
    i_pass=${i_pass:-0} i_fail=${i_fail:-0} i_skip=${i_skip:-0}
    passed=$((passed + i_pass)) failed=$((failed + i_fail)) skipped=$((skipped + i_skip))
    echo "test-all: integration: pass $i_pass, fail $i_fail, skip $i_skip (pytest exit $py_rc)"
    # 0 ok, 1 tests failed (counted), 5 none collected; anything else is a failure of its own
    case $py_rc in
        0|5) ;;
        1) [ "$i_fail" -gt 0 ] || extra_fail "pytest exited 1 with no failed test counted" ;;
        *) extra_fail "pytest exited $py_rc (interrupted, timed out or internal error)" ;;
    esac
else
    extra_fail "pytest exited $py_rc and wrote no report"
fi
# ---- leftovers: the bed must clean up after itself --------------------------------------
left=$(ls -A "$tmp/t" 2>/dev/null)
# (patterns from a file, so that grep's own command line does not match)
printf '%s\n' "$tmp/t/" "$tmp/basetemp/" > "$tmp/pat"
procs=$(grep -l -F -f "$tmp/pat" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | tr '\n' ' ')
if [ -n "$left" ] || [ -n "$procs" ]; then
    extra_fail "the test bed left behind: files [${left//$'\n'/ }] processes [$procs]"
fi
mounts=$(awk -v p="$tmp/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
[ -z "$mounts" ] || echo "$mounts" | xargs -r -n1 umount -l
rm -rf "$tmp"

note "done in $(( $(date +%s) - START )) s"
[ $build_ok = 1 ] || echo "test-all: the build failed" >&2
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ $build_ok = 1 ] && [ "$failed" -eq 0 ]
