#!/usr/bin/env bash
# Install the servers the test suite starts (tests/services.py) from Debian packages.
# Quiet and idempotent: prints nothing and changes nothing when everything is present.
#
#   scripts/install-test-deps.sh          install what is missing (via sudo when not root)
#   scripts/install-test-deps.sh --check  only report what is missing (exit 1 if anything)
set -euo pipefail

# What the tests need: "check|debian-package". A check containing "/" is a path glob that
# must match a file; otherwise it is a command that must be on PATH.
REQUIREMENTS=(
    "redis-server|redis-server"
    "/usr/lib/postgresql/*/bin/initdb|postgresql"
    "prometheus|prometheus"
    "prometheus-alertmanager|prometheus-alertmanager"
    "zsh|zsh"  # tests/test_cli.py runs the generated zsh completion in a real zsh
)

check_only=false
case "${1:-}" in
    "") ;;
    --check) check_only=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

present() {
    local check=$1
    if [[ $check == */* ]]; then
        compgen -G "$check" >/dev/null
    else
        command -v "$check" >/dev/null 2>&1
    fi
}

missing_packages() {
    local entry check package
    local -A seen=()
    for entry in "${REQUIREMENTS[@]}"; do
        check=${entry%%|*}
        package=${entry#*|}
        if ! present "$check" && [[ -z ${seen[$package]:-} ]]; then
            seen[$package]=1
            echo "$package"
        fi
    done
}

mapfile -t missing < <(missing_packages)
((${#missing[@]} == 0)) && exit 0

if $check_only; then
    echo "missing test dependencies; install the Debian packages: ${missing[*]}" >&2
    exit 1
fi

if ((EUID == 0)); then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "error: the test suite needs the Debian packages: ${missing[*]}" >&2
    echo "Install them as root, then re-run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get here; install these (or your system's equivalents): ${missing[*]}" >&2
    exit 1
fi

echo "installing test dependencies: ${missing[*]}" >&2
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"

# Fail loudly if a package did not provide what we check for (e.g. a renamed binary).
mapfile -t still_missing < <(missing_packages)
if ((${#still_missing[@]} > 0)); then
    echo "error: still missing after install: ${still_missing[*]}" >&2
    exit 1
fi
