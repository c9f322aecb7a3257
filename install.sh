#!/usr/bin/env bash
# Install modelrelay as a hardened systemd service on a Debian/Ubuntu machine.
#
#   ./install.sh                      build (cargo build --release --locked) and install; as root
#   ./install.sh --binary PATH        install an already built binary instead of building
#   ./install.sh --root DIR           install into the staging root DIR (or set DESTDIR)
#   ./install.sh --uninstall          remove the binary and the unit; keep config and data
#
# Safe to run again (upgrades do exactly that): files identical to the ones installed are left
# alone, and an existing /etc/modelrelay/modelrelay.toml is never overwritten.
set -euo pipefail

NAME=modelrelay
SRC_DIR=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat <<EOF
Usage: $0 [--binary PATH] [--root DIR] [--uninstall] [--help]

Installs modelrelay as a systemd service:
  <root>/usr/local/bin/modelrelay                    the binary (mode 0755)
  <root>/etc/systemd/system/modelrelay.service       the unit (mode 0644, replaced on upgrade)
  <root>/etc/modelrelay/modelrelay.toml              the config, from systemd/modelrelay.toml
                                                     (mode 0640 root:modelrelay; never overwritten)
  <root>/var/lib/modelrelay                          the state dir: database and key secret
and creates the system user and group 'modelrelay', then runs 'systemctl daemon-reload'.

Options:
  --binary PATH   install this binary instead of running 'cargo build --release --locked'
  --root DIR      install into the staging root DIR (also: DESTDIR=DIR). No user is created,
                  nothing is chowned and systemctl is not run; the script says what it would do.
  --uninstall     stop and disable the service, remove the binary and the unit; the config
                  (/etc/modelrelay), the data (/var/lib/modelrelay) and the user are kept
  -h, --help      this text
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

say() {
  echo "install.sh: $*"
}

ROOT=${DESTDIR:-}
BINARY=
UNINSTALL=0
while [ $# -gt 0 ]; do
  case $1 in
    --binary)
      [ $# -ge 2 ] || die "--binary needs a PATH"
      BINARY=$2
      shift 2
      ;;
    --binary=*)
      BINARY=${1#--binary=}
      shift
      ;;
    --root)
      [ $# -ge 2 ] || die "--root needs a DIR"
      ROOT=$2
      shift 2
      ;;
    --root=*)
      ROOT=${1#--root=}
      shift
      ;;
    --uninstall)
      UNINSTALL=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
done

STAGING=0
if [ -n "$ROOT" ]; then
  STAGING=1
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || { ROOT=; STAGING=0; }
fi
if [ "$STAGING" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 ...), or stage into a directory with --root DIR"
fi

BIN_DEST=$ROOT/usr/local/bin/$NAME
UNIT_DEST=$ROOT/etc/systemd/system/$NAME.service
CONF_DIR=$ROOT/etc/$NAME
CONF_DEST=$CONF_DIR/$NAME.toml
STATE_DIR=$ROOT/var/lib/$NAME

# Run a command that changes the machine's accounts or services; under --root, only print it.
run_system() {
  if [ "$STAGING" -eq 1 ]; then
    say "staging, would run: $*"
  else
    "$@"
  fi
}

# Whether systemd is the running init (not true in most containers).
systemd_running() {
  [ "$STAGING" -eq 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

# install_file MODE SRC DEST: copy SRC to DEST with MODE unless DEST already has that content
# and mode. GNU install replaces DEST by a new file, so a running binary is not disturbed.
install_file() {
  local mode=$1 src=$2 dest=$3
  mkdir -p "$(dirname "$dest")"
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    say "unchanged: $dest"
    return
  fi
  install -m "$mode" "$src" "$dest"
  say "installed: $dest"
}

# make_dir MODE OWNER DIR: create DIR (and parents) with MODE and OWNER (OWNER only outside
# staging); an existing DIR is left as it is.
make_dir() {
  local mode=$1 owner=$2 dir=$3
  if [ -d "$dir" ]; then
    say "exists: $dir"
    return
  fi
  mkdir -p "$dir"
  chmod "$mode" "$dir"
  run_system chown "$owner" "$dir"
  say "created: $dir"
}

if [ "$UNINSTALL" -eq 1 ]; then
  if systemd_running; then
    systemctl disable --now "$NAME.service" 2>/dev/null || true
  elif [ "$STAGING" -eq 1 ]; then
    say "staging, would run: systemctl disable --now $NAME.service"
  fi
  for f in "$BIN_DEST" "$UNIT_DEST"; do
    if [ -e "$f" ]; then
      rm -f "$f"
      say "removed: $f"
    fi
  done
  if systemd_running; then
    systemctl daemon-reload
  fi
  say "kept the config ($CONF_DIR), the data ($STATE_DIR) and the user '$NAME'."
  dropins="$ROOT/etc/systemd/system/$NAME.service.d"
  if [ -d "$dropins" ]; then
    # `systemctl edit` made it (the credentials): the operator's, so kept, and named here.
    say "kept the unit's drop-ins ($dropins): remove them with the rest"
    say "to remove them too: rm -r $CONF_DIR $STATE_DIR $dropins; systemctl daemon-reload; userdel $NAME"
  else
    say "to remove them too: rm -r $CONF_DIR $STATE_DIR; userdel $NAME"
  fi
  exit 0
fi

if [ -z "$BINARY" ]; then
  command -v cargo >/dev/null ||
    die "cargo not found: install Rust (https://rustup.rs) or build elsewhere and pass --binary PATH"
  say "building: cargo build --release --locked"
  cargo build --release --locked --manifest-path "$SRC_DIR/Cargo.toml"
  BINARY=$SRC_DIR/target/release/$NAME
fi
if [ ! -f "$BINARY" ] || [ ! -x "$BINARY" ]; then
  die "not an executable file: $BINARY"
fi
[ -f "$SRC_DIR/systemd/$NAME.service" ] || die "missing $SRC_DIR/systemd/$NAME.service"
[ -f "$SRC_DIR/systemd/$NAME.toml" ] || die "missing $SRC_DIR/systemd/$NAME.toml"

# The system user and group.
if [ "$STAGING" -eq 1 ]; then
  say "staging, would create the system group and user '$NAME' (groupadd --system $NAME;" \
    "useradd --system --gid $NAME --home-dir /var/lib/$NAME --no-create-home" \
    "--shell /usr/sbin/nologin $NAME)"
else
  if ! getent group "$NAME" >/dev/null; then
    groupadd --system "$NAME"
    say "created the system group '$NAME'"
  fi
  if ! getent passwd "$NAME" >/dev/null; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    useradd --system --gid "$NAME" --home-dir "/var/lib/$NAME" --no-create-home \
      --shell "$nologin" --comment "modelrelay service" "$NAME"
    say "created the system user '$NAME'"
  fi
fi

# An earlier install (the binary already in place): an upgrade, whose next step is a restart.
UPGRADE=0
BINARY_CHANGED=1
if [ -f "$BIN_DEST" ]; then
  UPGRADE=1
  cmp -s "$BINARY" "$BIN_DEST" && BINARY_CHANGED=0
fi
# A new unit applies at the next start too.
UNIT_CHANGED=1
if [ -f "$UNIT_DEST" ] && cmp -s "$SRC_DIR/systemd/$NAME.service" "$UNIT_DEST"; then
  UNIT_CHANGED=0
fi
install_file 0755 "$BINARY" "$BIN_DEST"
install_file 0644 "$SRC_DIR/systemd/$NAME.service" "$UNIT_DEST"

make_dir 0755 root:root "$CONF_DIR"
CONFIG_REFUSED=0
if [ -e "$CONF_DEST" ]; then
  say "kept the existing config: $CONF_DEST (see systemd/$NAME.toml for new keys)"
  # A config an earlier version accepted may hold a value this one refuses: the restart would
  # then stop the running service and fail to start the new one. Said now, while it still runs.
  # Its warnings are shown either way: a new version may warn of what it did not.
  if ! check_out=$("$BIN_DEST" check-config --config "$CONF_DEST" 2>&1 >/dev/null); then
    CONFIG_REFUSED=1
    echo "install.sh: WARNING: this version refuses the kept config $CONF_DEST" \
      "(settings the unit's drop-ins give with Environment= or EnvironmentFile= are not seen here):" >&2
    printf '%s\n' "$check_out" >&2
  elif [ -n "$check_out" ]; then
    echo "install.sh: check-config on the kept config $CONF_DEST says:" >&2
    printf '%s\n' "$check_out" >&2
  fi
else
  install -m 0640 "$SRC_DIR/systemd/$NAME.toml" "$CONF_DEST"
  run_system chown "root:$NAME" "$CONF_DEST"
  say "installed: $CONF_DEST (from systemd/$NAME.toml)"
fi

make_dir 0750 "$NAME:$NAME" "$STATE_DIR"

if systemd_running; then
  systemctl daemon-reload
  say "ran: systemctl daemon-reload"
elif [ "$STAGING" -eq 1 ]; then
  say "staging, would run: systemctl daemon-reload"
else
  say "systemd is not running here: skipped systemctl daemon-reload"
fi

if [ "$UPGRADE" -eq 1 ]; then
  if [ "$CONFIG_REFUSED" -eq 1 ]; then
    cat <<EOF

Fix $CONF_DEST first (check it with: $NAME check-config --config $CONF_DEST): a restart now
would stop the running service, and the new version would refuse to start.
EOF
  fi
  if [ "$BINARY_CHANGED" -eq 1 ] || [ "$UNIT_CHANGED" -eq 1 ]; then
    cat <<EOF

modelrelay is upgraded. A running service still runs the old binary and unit until restarted:
  systemctl restart $NAME        # drains requests in flight first (server.drain_secs)
  journalctl -u $NAME -f         # a new version may migrate the database at its first start
EOF
  else
    echo
    say "the installed binary and unit are already these: nothing to restart."
  fi
  exit 0
fi

cat <<EOF

modelrelay is installed. Next steps:
  1. Set the DeepSeek API key and the PayPal credentials, kept out of the config file: e.g.
       install -m 0600 /dev/null /etc/$NAME/deepseek_api_key   # then write the key into it
     and add LoadCredential=deepseek_api_key:/etc/$NAME/deepseek_api_key under [Service] in
     a drop-in ('systemctl edit $NAME': an upgrade replaces the unit file itself, never its
     drop-ins), with upstream.api_key_file = "/run/credentials/$NAME.service/deepseek_api_key"
     in /etc/$NAME/$NAME.toml; the same for paypal.client_secret_file. Set paypal.env,
     paypal.client_id, paypal.webhook_id and server.public_url there too, then check it
     (credentials under /run/credentials exist only while the service runs: before the first
     start it warns that it cannot read them, which is expected):
       $NAME check-config --config /etc/$NAME/$NAME.toml
  2. Start it now and at every boot:
       systemctl enable --now $NAME
       journalctl -u $NAME -f
  3. Put Caddy or nginx in front for TLS (modelrelay listens on 127.0.0.1:8080) and set
     server.behind_proxy = true so per-IP limits see the customers' addresses.
  4. To use 'modelrelay console' and 'modelrelay keys' without root: set
     server.admin_group = "$NAME" and add yourself to that group (usermod -aG $NAME YOU).
EOF
if ! systemd_running && [ "$STAGING" -eq 0 ]; then
  cat <<EOF

systemd is not running on this machine, so step 2 does not apply: start the daemon as its user
under whatever supervises services here, with the secrets set in the config or in files it can
read (LoadCredential is systemd's). The admin socket's directory is systemd's to make too
(RuntimeDirectory=), and /run is emptied at every boot, so make it before each start, e.g.
       install -d -o $NAME -g $NAME -m 0750 /run/$NAME
       sudo -u $NAME $BIN_DEST serve --config $CONF_DEST
EOF
fi
