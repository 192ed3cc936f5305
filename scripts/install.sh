#!/usr/bin/env bash
# Installs ringswarm: the binary, the systemd units, example configs, shell completions
# and manual pages.
#
#   scripts/install.sh [--prefix /usr/local] [--binary PATH] [--unit-dir DIR]
#                      [--config-dir /etc/ringswarm] [--dest-root DIR]
#
# Build first as yourself, then install as root:
#   cargo build --release --locked && sudo scripts/install.sh --binary target/release/ringswarm
# Without --binary it builds one (cargo build --release --locked), but not as root (sudo's
# PATH lacks cargo, and a root-owned target/ would stay behind). --dest-root puts every
# file under DIR as if it were / (for packaging and tests); the paths written into the
# units stay the real ones. An existing config is never overwritten: the example goes
# beside it as NAME.toml.example, and the script says so. It starts nothing: the next
# steps are printed at the end.
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

# Files being written (NAME.tmp, NAME.new.PID): removed if the script stops half way.
temps=()
cleanup() {
    for t in "${temps[@]+"${temps[@]}"}"; do
        rm -f -- "$t"
    done
}
trap cleanup EXIT

prefix=/usr/local
binary=
unit_dir=/etc/systemd/system
config_dir=/etc/ringswarm
dest_root=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --unit-dir) unit_dir=${2:?--unit-dir needs a directory}; shift 2 ;;
        --config-dir) config_dir=${2:?--config-dir needs a directory}; shift 2 ;;
        --dest-root) dest_root=${2:?--dest-root needs a directory}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
    esac
done
for d in "$prefix" "$unit_dir" "$config_dir"; do
    case "$d" in
        /*) ;;
        *) echo "install.sh: \`$d\` must be an absolute path" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$binary" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "install.sh: not building as root: run \`cargo build --release --locked\` as yourself, then \`sudo scripts/install.sh --binary target/release/ringswarm\`" >&2
        exit 1
    fi
    echo "building ringswarm (cargo build --release --locked -p ringswarm)"
    (cd "$repo" && cargo build --release --locked -p ringswarm)
    binary="${CARGO_TARGET_DIR:-$repo/target}/release/ringswarm"
fi
if [ ! -x "$binary" ]; then
    echo "install.sh: \`$binary\` is not an executable file" >&2
    exit 1
fi

bin_path="$prefix/bin/ringswarm"
root=${dest_root%/}
say() { echo "  $*"; }

install -d "$root$prefix/bin"
install -m 0755 "$binary" "$root$bin_path"
say "$bin_path"

# Units: ExecStart names the installed binary and the config directory chosen here.
install -d "$root$unit_dir"
for unit in "$repo"/scripts/systemd/*.service; do
    name=$(basename "$unit")
    temps+=("$root$unit_dir/$name.tmp")
    sed -e "s|/usr/local/bin/ringswarm|$bin_path|g" \
        -e "s|/etc/ringswarm/|$config_dir/|g" "$unit" >"$root$unit_dir/$name.tmp"
    chmod 0644 "$root$unit_dir/$name.tmp"
    mv "$root$unit_dir/$name.tmp" "$root$unit_dir/$name"
    say "$unit_dir/$name"
done

# Example configs, never over an operator's own (one the same as shipped is no one's own).
install -d -m 0755 "$root$config_dir"
kept=()
for conf in "$repo"/scripts/systemd/*.toml; do
    name=$(basename "$conf")
    target="$root$config_dir/$name"
    new="$target.new.$$"
    temps+=("$new")
    sed -e "s|/etc/ringswarm/|$config_dir/|g" "$conf" >"$new"
    chmod 0644 "$new"
    if [ -e "$target" ] && ! cmp -s "$new" "$target"; then
        target="$target.example"
        kept+=("$config_dir/$name")
    fi
    mv "$new" "$target"
    say "${target#"$root"}"
done

# Completions and manual pages, from the binary itself.
share="$prefix/share"
install -d "$root$share/bash-completion/completions" "$root$share/zsh/site-functions" \
    "$root$share/fish/vendor_completions.d" "$root$share/man/man1"
"$binary" completions bash >"$root$share/bash-completion/completions/ringswarm"
"$binary" completions zsh >"$root$share/zsh/site-functions/_ringswarm"
"$binary" completions fish >"$root$share/fish/vendor_completions.d/ringswarm.fish"
say "$share/{bash-completion/completions/ringswarm,zsh/site-functions/_ringswarm,fish/vendor_completions.d/ringswarm.fish}"
"$binary" man --dir "$root$share/man/man1"
say "$share/man/man1/ringswarm*.1"

for c in "${kept[@]+"${kept[@]}"}"; do
    echo "kept your $c; the shipped example is beside it as $c.example"
done
cat <<NEXT
installed ringswarm into ${root:-/}. Next:
  ringswarm keygen $config_dir/release     # on the build machine; agents need release.pub
  systemctl daemon-reload
  systemctl enable --now ringswarm-tracker ringswarm-origin ringswarm-agent
NEXT
