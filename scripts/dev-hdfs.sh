#!/usr/bin/env bash
# dev-hdfs.sh — run a real (single-node) Apache Hadoop HDFS with WebHDFS on 127.0.0.1
# for redundo's WebHDFS tests.
#
# Usage:
#   scripts/dev-hdfs.sh [start]   install (cached) + start NameNode and DataNode, wait until
#                                 WebHDFS can CREATE/OPEN a file, then print on stdout:
#                                   export REDUNDO_TEST_WEBHDFS=http://127.0.0.1:9870
#                                 (everything else goes to stderr, so `eval "$(scripts/dev-hdfs.sh)"` works)
#   scripts/dev-hdfs.sh stop      stop both daemons
#   scripts/dev-hdfs.sh stop-datanode   stop the DataNode only (`start` brings it back)
#   scripts/dev-hdfs.sh status    say whether they run (exit 0 if both run, WebHDFS answers and the
#                                 NameNode answering is this script's own, 3 if not)
#   scripts/dev-hdfs.sh restart   stop, then start
#   scripts/dev-hdfs.sh reset     stop and delete the HDFS data (name + data dirs); keeps the jars
#   scripts/dev-hdfs.sh logs      print the tail of both daemon logs
#
# Environment:
#   REDUNDO_HDFS_HOME          cache/work folder (default $HOME/.cache/redundo-hdfs)
#   REDUNDO_HDFS_HTTP_PORT     NameNode HTTP/WebHDFS port (default 9870)
#   REDUNDO_HDFS_RPC_PORT      NameNode RPC port (default 9820)
#   REDUNDO_HDFS_DN_PORT       DataNode data-transfer port (default 9866, next free if busy)
#   REDUNDO_HDFS_DN_HTTP_PORT  DataNode HTTP port, the WebHDFS redirect target (default 9864, next free if busy)
#   REDUNDO_HDFS_DN_IPC_PORT   DataNode IPC port (default 9867, next free if busy)
#   REDUNDO_HDFS_TIMEOUT       seconds to wait for readiness (default 180)
#   REDUNDO_HDFS_JAVA          java binary to use (default: a Java 8..22 found on the machine,
#                              else openjdk-17-jre-headless is installed with apt-get)
#   REDUNDO_HDFS_JAVA_OPTS     extra JVM options for both daemons
#   REDUNDO_HDFS_VERSION_FILE  the NameNode VERSION file whose clusterID the NameNode answering on
#                              the HTTP port must report (default: this script's own,
#                              $REDUNDO_HDFS_HOME/data/name/current/VERSION); for testing the check
#
# Where the bits come from (only package registries are reachable): Hadoop 2.7.3's HDFS jars
# (NameNode, DataNode, WebHDFS) and their dependencies are taken from the source distribution
# of pyspark==2.4.8 on PyPI (deps/jars/); Jersey 1 (needed by the NameNode's WebHDFS servlet,
# which Spark does not ship) comes from Debian's libjersey1-*-java packages.
set -euo pipefail

PYSPARK_VERSION=2.4.8
HADOOP_VERSION=2.7.3

HDFS_HOME=${REDUNDO_HDFS_HOME:-$HOME/.cache/redundo-hdfs}
HTTP_PORT=${REDUNDO_HDFS_HTTP_PORT:-9870}
RPC_PORT=${REDUNDO_HDFS_RPC_PORT:-9820}
TIMEOUT=${REDUNDO_HDFS_TIMEOUT:-180}
HOST=127.0.0.1

LIB=$HDFS_HOME/lib
CONF=$HDFS_HOME/conf
DATA=$HDFS_HOME/data
LOGS=$HDFS_HOME/logs
RUN=$HDFS_HOME/run
WEBHDFS=http://$HOST:$HTTP_PORT/webhdfs/v1

# Jars taken from pyspark-<v>/deps/jars/ (prefixes; each must match at least one jar).
JAR_PREFIXES=(
  hadoop-annotations- hadoop-auth- hadoop-common- hadoop-hdfs-
  guava- protobuf-java- htrace-core-
  commons-cli- commons-codec- commons-collections- commons-configuration- commons-io-
  commons-lang-2 commons-lang3- commons-logging- commons-math3- commons-net-
  commons-compress- commons-beanutils- commons-digester- commons-httpclient-
  log4j-1 slf4j-api- slf4j-log4j12-
  jackson-core-asl- jackson-mapper-asl- jackson-jaxrs- jackson-xc-
  jetty-6 jetty-util-6 javax.servlet-api- netty-3 netty-all- xmlenc- jaxb-api- activation-
  jsr305- httpclient- httpcore- avro-1 paranamer- gson- zookeeper- xercesImpl- xz-
  snappy-java- stax-api-1.0-2 curator-client- curator-framework-
)
# Debian packages providing Jersey 1 + JAX-RS 1.1 API, and the jars to copy from /usr/share/java.
JERSEY_PKGS=(libjersey1-core-java libjersey1-server-java libjersey1-servlet-java libjsr311-api-java)
JERSEY_JARS=(jersey1-core.jar jersey1-server.jar jersey1-servlet.jar jsr311-api.jar)

log() { printf '[dev-hdfs] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; please install: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------- java
java_major() { # $1 = java binary; prints the major version (8, 11, 17, ...)
  local v
  v=$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  case $v in 1.*) v=${v#1.} ;; esac
  printf '%s\n' "${v%%[.+-]*}"
}
java_ok() { # Hadoop 2.7 runs on Java 8..22 (23+ removed Subject.getSubject, which UGI needs)
  local m
  [ -x "$1" ] || return 1
  m=$(java_major "$1" 2>/dev/null) || return 1
  [ -n "$m" ] && [ "$m" -ge 8 ] 2>/dev/null && [ "$m" -le 22 ]
}
find_java() {
  local c
  if [ -n "${REDUNDO_HDFS_JAVA:-}" ]; then JAVA=$REDUNDO_HDFS_JAVA; return; fi
  for c in "$(command -v java 2>/dev/null || true)" ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
           /usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/java-21-openjdk-*/bin/java \
           /usr/lib/jvm/java-11-openjdk-*/bin/java; do
    if [ -n "$c" ] && java_ok "$c"; then JAVA=$c; return; fi
  done
  apt_install openjdk-17-jre-headless
  for c in /usr/lib/jvm/java-17-openjdk-*/bin/java "$(command -v java 2>/dev/null || true)"; do
    if [ -n "$c" ] && java_ok "$c"; then JAVA=$c; return; fi
  done
  die "no usable Java (8..22) found, even after installing openjdk-17-jre-headless"
}

# ---------------------------------------------------------------- install (cached)
install_jars() {
  local stamp=$LIB/.complete-$PYSPARK_VERSION
  [ -f "$stamp" ] && return 0
  log "installing Hadoop $HADOOP_VERSION jars into $LIB (one-time, ~220 MB download)"
  command -v curl >/dev/null || apt_install curl ca-certificates

  # Jersey 1 from Debian.
  local j missing=0
  for j in "${JERSEY_JARS[@]}"; do [ -e "/usr/share/java/$j" ] || missing=1; done
  if [ "$missing" = 1 ]; then apt_install "${JERSEY_PKGS[@]}"; fi

  # pyspark sdist from PyPI, via pip in a private venv.
  local py venv=$HDFS_HOME/venv dl=$HDFS_HOME/download
  py=$(command -v python3 || true)
  if [ -z "$py" ]; then apt_install python3 python3-venv; py=$(command -v python3); fi
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >&2; then
      rm -rf "$venv"
      apt_install python3-venv python3-pip
      "$py" -m venv "$venv" >&2
    fi
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check 'setuptools<75' 'wheel<0.49' >&2
  local tgz=$dl/pyspark-$PYSPARK_VERSION.tar.gz
  if [ ! -f "$tgz" ]; then
    mkdir -p "$dl"
    log "pip download pyspark==$PYSPARK_VERSION (sdist)"
    "$venv/bin/python" -m pip download "pyspark==$PYSPARK_VERSION" --no-deps --no-binary :all: \
      --no-build-isolation --no-cache-dir --disable-pip-version-check -d "$dl.tmp" >&2
    mv "$dl.tmp/pyspark-$PYSPARK_VERSION.tar.gz" "$tgz"
    rm -rf "$dl.tmp"
  fi

  log "extracting jars"
  local tmp=$HDFS_HOME/extract.tmp p
  rm -rf "$tmp" && mkdir -p "$tmp"
  local pats=()
  for p in "${JAR_PREFIXES[@]}"; do pats+=("pyspark-$PYSPARK_VERSION/deps/jars/$p*.jar"); done
  tar -xzf "$tgz" -C "$tmp" --wildcards "${pats[@]}"
  rm -rf "$LIB" && mkdir -p "$LIB"
  for p in "${JAR_PREFIXES[@]}"; do
    compgen -G "$tmp/pyspark-$PYSPARK_VERSION/deps/jars/$p*.jar" >/dev/null || die "jar $p* not found in pyspark sdist"
  done
  mv "$tmp/pyspark-$PYSPARK_VERSION/deps/jars/"*.jar "$LIB/"
  for j in "${JERSEY_JARS[@]}"; do cp -L "/usr/share/java/$j" "$LIB/$j"; done
  [ -f "$LIB/hadoop-hdfs-$HADOOP_VERSION.jar" ] || die "hadoop-hdfs-$HADOOP_VERSION.jar missing"
  rm -rf "$tmp" "$dl" "$venv"   # keep only the ~40 MB of jars
  touch "$stamp"
  log "jars installed: $(ls "$LIB" | wc -l) files, $(du -sh "$LIB" | cut -f1)"
}

# ---------------------------------------------------------------- ports / config
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
PICKED=" "
pick_port() { # $1 = variable name, $2 = explicit value or empty, $3 = default; sets $1 to a free port
  local p=${2:-$3}
  if [ -z "$2" ]; then
    while port_busy "$p" || [[ $PICKED == *" $p "* ]]; do
      p=$((p + 1)); [ "$p" -lt $(($3 + 200)) ] || die "no free port near $3"
    done
  fi
  PICKED="$PICKED$p "
  printf -v "$1" '%s' "$p"
}

write_conf() {
  mkdir -p "$CONF" "$DATA" "$LOGS" "$RUN"
  # Spark's hadoop-hdfs jar lacks the webapps/ folders that HttpServer2 looks up on the
  # classpath; empty ones (the conf dir is on the classpath) are enough for WebHDFS.
  mkdir -p "$CONF/webapps/hdfs" "$CONF/webapps/datanode" "$CONF/webapps/secondary" "$CONF/webapps/static"
  cat > "$CONF/core-site.xml" <<EOF
<?xml version="1.0"?>
<!-- written by scripts/dev-hdfs.sh -->
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://$HOST:$RPC_PORT</value></property>
  <property><name>hadoop.tmp.dir</name><value>$DATA/tmp</value></property>
  <property><name>hadoop.security.authentication</name><value>simple</value></property>
</configuration>
EOF
  cat > "$CONF/hdfs-site.xml" <<EOF
<?xml version="1.0"?>
<!-- written by scripts/dev-hdfs.sh -->
<configuration>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.webhdfs.enabled</name><value>true</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <property><name>dfs.namenode.name.dir</name><value>file://$DATA/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>file://$DATA/data</value></property>
  <property><name>dfs.namenode.rpc-address</name><value>$HOST:$RPC_PORT</value></property>
  <property><name>dfs.namenode.http-address</name><value>$HOST:$HTTP_PORT</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>$HOST:0</value></property>
  <property><name>dfs.datanode.address</name><value>$HOST:$DN_PORT</value></property>
  <property><name>dfs.datanode.http.address</name><value>$HOST:$DN_HTTP_PORT</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>$HOST:$DN_IPC_PORT</value></property>
  <!-- makes the WebHDFS redirect Location http://127.0.0.1:<dn http port>/... -->
  <property><name>dfs.datanode.hostname</name><value>$HOST</value></property>
  <property><name>dfs.client.use.datanode.hostname</name><value>true</value></property>
  <property><name>dfs.namenode.datanode.registration.ip-hostname-check</name><value>false</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
</configuration>
EOF
  cat > "$CONF/log4j.properties" <<'EOF'
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.metrics2.impl.MetricsConfig=ERROR
EOF
}

# ---------------------------------------------------------------- processes
pidfile() { printf '%s/%s.pid\n' "$RUN" "$1"; }
running_pid() { # $1 = namenode|datanode; prints pid if our daemon of that role runs
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "-Dredundo.hdfs.role=$1 -Dredundo.hdfs.home=$HDFS_HOME " || return 1
  printf '%s\n' "$pid"
}

java_cmd() { # $1 = role, $2 = main class, rest = args
  local role=$1 cls=$2; shift 2
  # shellcheck disable=SC2086
  printf '%s\0' "$JAVA" "-Dredundo.hdfs.role=$role" "-Dredundo.hdfs.home=$HDFS_HOME" \
    -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true \
    "-Dhadoop.log.dir=$LOGS" "-Dhadoop.home.dir=$HDFS_HOME" \
    ${REDUNDO_HDFS_JAVA_OPTS:-} -cp "$LIB/*:$CONF" "$cls" "$@"
}

format_once() {
  if [ -f "$DATA/name/current/VERSION" ]; then return 0; fi
  log "formatting NameNode"
  rm -rf "$DATA/name" "$DATA/data"   # a new namespace needs an empty DataNode dir (clusterID)
  local cmd=()
  mapfile -d '' cmd < <(java_cmd format org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive -force)
  if ! "${cmd[@]}" > "$LOGS/format.log" 2>&1 9>&-; then
    tail -n 40 "$LOGS/format.log" >&2
    die "NameNode -format failed (log: $LOGS/format.log)"
  fi
}

start_daemon() { # $1 = role, $2 = class
  local role=$1 cls=$2 pid cmd=()
  if pid=$(running_pid "$role"); then log "$role already running (pid $pid)"; return 0; fi
  mapfile -d '' cmd < <(java_cmd "$role" "$cls")
  [ -f "$LOGS/$role.log" ] && mv -f "$LOGS/$role.log" "$LOGS/$role.log.1"
  rm -f "$(pidfile "$role")"
  # setsid: own session, so the daemon outlives the calling terminal / Ctrl-C.
  setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$(pidfile "$role")" "${cmd[@]}" \
    > "$LOGS/$role.log" 2>&1 < /dev/null 9>&- &
  STARTED+=("$role")
  local i
  for i in $(seq 1 50); do [ -s "$(pidfile "$role")" ] && break; sleep 0.1; done
  log "started $role (pid $(cat "$(pidfile "$role")"), log $LOGS/$role.log)"
}

stop_daemon() { # $1 = role
  local role=$1 pid i
  if ! pid=$(running_pid "$role"); then rm -f "$(pidfile "$role")"; log "$role not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then log "$role (pid $pid) did not stop on TERM, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$(pidfile "$role")"
  log "stopped $role (pid $pid)"
}

show_logs() {
  local r
  for r in namenode datanode; do
    if [ -f "$LOGS/$r.log" ]; then
      printf '\n===== tail of %s =====\n' "$LOGS/$r.log" >&2
      tail -n "${1:-40}" "$LOGS/$r.log" >&2
    fi
  done
}

STARTED=()
fail() { # show the logs, stop what this run started (so a retry starts clean), exit 1
  local r
  log "ERROR: $*"
  show_logs 40
  for r in "${STARTED[@]}"; do stop_daemon "$r" || true; done
  log "logs: $LOGS"
  exit 1
}

# ---------------------------------------------------------------- readiness
http_code() { curl -s -o /dev/null -m 10 -w '%{http_code}' "$@" 2>/dev/null || true; }

probe_roundtrip() { # full CREATE (two steps) + OPEN + DELETE; returns 0 when the cluster really works
  local path=/.redundo-dev-hdfs-probe body hdrs loc code got
  body="redundo probe $$ $RANDOM"
  hdrs=$(curl -s -m 10 -o /dev/null -D - -X PUT "$WEBHDFS$path?op=CREATE&overwrite=true&user.name=root" 2>/dev/null) || return 1
  code=$(printf '%s' "$hdrs" | head -n1 | awk '{print $2}')
  [ "$code" = 307 ] || return 1
  loc=$(printf '%s' "$hdrs" | tr -d '\r' | sed -n 's/^[Ll]ocation: *//p' | head -n1)
  case $loc in
    "http://$HOST:"*) ;;
    *) fail "WebHDFS redirect Location does not point at $HOST: '$loc'" ;;
  esac
  code=$(printf '%s' "$body" | http_code -X PUT -H 'Content-Type: application/octet-stream' --data-binary @- "$loc")
  [ "$code" = 201 ] || return 1
  got=$(curl -s -m 10 -L "$WEBHDFS$path?op=OPEN&user.name=root" 2>/dev/null) || return 1
  [ "$got" = "$body" ] || return 1
  curl -s -m 10 -o /dev/null -X DELETE "$WEBHDFS$path?op=DELETE&user.name=root" || true
  return 0
}

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT)) stage=webhdfs r
  while :; do
    for r in namenode datanode; do
      running_pid "$r" >/dev/null || fail "$r exited during startup"
    done
    if [ "$stage" = webhdfs ]; then
      if [ "$(http_code "$WEBHDFS/?op=GETFILESTATUS&user.name=root")" = 200 ]; then
        log "WebHDFS answers after ${SECONDS}s; waiting for the DataNode"
        stage=datanode
      fi
    fi
    if [ "$stage" = datanode ] && probe_roundtrip; then
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "HDFS not ready after ${TIMEOUT}s (stage: $stage)"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- is it ours?
# A NameNode of another cluster on the same port (a second install, another user's) would
# otherwise pass every check above: the one answering must report the cluster id that this
# script's own name folder was formatted with.
VERSION_FILE=${REDUNDO_HDFS_VERSION_FILE:-$DATA/name/current/VERSION}
cluster_id_problem() { # prints why the NameNode answering is not ours; nothing when it is
  local ours theirs
  ours=$(sed -n 's/^clusterID=//p' "$VERSION_FILE" 2>/dev/null | head -n1)
  if [ -z "$ours" ]; then
    echo "no clusterID in $VERSION_FILE: this script has not formatted a NameNode there"
    return
  fi
  theirs=$(curl -s -m 10 "http://$HOST:$HTTP_PORT/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo" 2>/dev/null |
    sed -n 's/.*"ClusterId" *: *"\([^"]*\)".*/\1/p' | head -n1)
  if [ -z "$theirs" ]; then
    echo "the NameNode at http://$HOST:$HTTP_PORT reports no cluster id (JMX NameNodeInfo)"
  elif [ "$theirs" != "$ours" ]; then
    echo "the NameNode at http://$HOST:$HTTP_PORT is another cluster's (cluster id $theirs, this script's is $ours in $VERSION_FILE): stop it or set REDUNDO_HDFS_HTTP_PORT"
  fi
}

# ---------------------------------------------------------------- commands
with_lock() {
  mkdir -p "$HDFS_HOME"
  exec 9> "$HDFS_HOME/.lock"
  flock -w 300 9 || die "could not lock $HDFS_HOME/.lock"
}

cmd_start() {
  with_lock
  SECONDS=0
  local nn dn problem
  nn=$(running_pid namenode || true); dn=$(running_pid datanode || true)
  if [ -n "$nn" ] && [ -n "$dn" ] && [ "$(http_code "$WEBHDFS/?op=GETFILESTATUS&user.name=root")" = 200 ]; then
    problem=$(cluster_id_problem)
    [ -z "$problem" ] || die "$problem"
    log "already running (namenode $nn, datanode $dn)"
    printf 'export REDUNDO_TEST_WEBHDFS=http://%s:%s\n' "$HOST" "$HTTP_PORT"
    return 0
  fi
  find_java
  log "java: $JAVA (major $(java_major "$JAVA"))"
  command -v curl >/dev/null || apt_install curl ca-certificates
  install_jars
  # Installing can take a minute: look again at what runs and which ports are taken now.
  nn=$(running_pid namenode || true); dn=$(running_pid datanode || true)
  if [ -z "$nn" ]; then
    port_busy "$HTTP_PORT" && die "port $HOST:$HTTP_PORT is in use by something else (set REDUNDO_HDFS_HTTP_PORT)"
    port_busy "$RPC_PORT" && die "port $HOST:$RPC_PORT is in use by something else (set REDUNDO_HDFS_RPC_PORT)"
  fi
  if [ -z "$dn" ]; then
    PICKED=" $HTTP_PORT $RPC_PORT "
    pick_port DN_HTTP_PORT "${REDUNDO_HDFS_DN_HTTP_PORT:-}" 9864
    pick_port DN_PORT "${REDUNDO_HDFS_DN_PORT:-}" 9866
    pick_port DN_IPC_PORT "${REDUNDO_HDFS_DN_IPC_PORT:-}" 9867
    write_conf
  fi  # else: keep the config the running DataNode was started with
  format_once
  [ -n "$nn" ] || start_daemon namenode org.apache.hadoop.hdfs.server.namenode.NameNode
  [ -n "$dn" ] || start_daemon datanode org.apache.hadoop.hdfs.server.datanode.DataNode
  wait_ready
  problem=$(cluster_id_problem)
  [ -z "$problem" ] || fail "$problem"
  log "HDFS ready in ${SECONDS}s (NameNode http://$HOST:$HTTP_PORT, rpc $HOST:$RPC_PORT)"
  printf 'export REDUNDO_TEST_WEBHDFS=http://%s:%s\n' "$HOST" "$HTTP_PORT"
}

cmd_stop() {
  with_lock
  stop_daemon datanode
  stop_daemon namenode
}

cmd_status() {
  local r pid rc=0 problem
  for r in namenode datanode; do
    if pid=$(running_pid "$r"); then echo "$r: running (pid $pid)"; else echo "$r: not running"; rc=3; fi
  done
  if [ "$(http_code "$WEBHDFS/?op=GETFILESTATUS&user.name=root")" = 200 ]; then
    echo "webhdfs: answering at http://$HOST:$HTTP_PORT"
    problem=$(cluster_id_problem)
    if [ -z "$problem" ]; then
      echo "cluster: the NameNode answering is this script's ($(sed -n 's/^clusterID=//p' "$VERSION_FILE" | head -n1))"
    else
      echo "cluster: $problem"; rc=3
    fi
  else
    echo "webhdfs: not answering at http://$HOST:$HTTP_PORT"; rc=3
  fi
  return "$rc"
}

cmd_reset() {
  cmd_stop
  rm -rf "$DATA"
  log "deleted $DATA"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  stop-datanode) with_lock; stop_daemon datanode ;;
  status) cmd_status ;;
  restart) cmd_stop; exec 9>&-; cmd_start ;;
  reset) cmd_reset ;;
  logs) show_logs "${2:-80}" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start|stop|stop-datanode|status|restart|reset|logs)" ;;
esac
