#!/usr/bin/env bash
# Benchmark redundo against the tools a user would otherwise combine, in one run.
#
# Usage: bench/run.sh [--scale S] [--runs N] [--out FILE] [options]
#
#   --scale S        size of the generated tree: 1 = one 1 GiB model file, four 256 MiB
#                    shards and 20,000 files of 1-64 KiB in 200 folders (about 2.3 GiB);
#                    0.05 is about 118 MiB (default 1)
#   --runs N         times each redundo/peer pair is run, alternating (default 3)
#   --out FILE       markdown file to write (default docs/performance.md); the results go
#                    between the `bench:begin`/`bench:end` markers, the rest is kept
#   --only LIST      comma-separated sections (default all but s3 and hdfs):
#                    backup,verify,noop,rclone,many,manifest,s3,hdfs
#   --s3 URL         S3 endpoint for the s3 section (default $REDUNDO_TEST_S3; credentials
#                    from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, as for redundo and aws)
#   --s3-bucket B    bucket for the s3 section (default redundo-bench; made if missing, and
#                    then removed at the end unless --keep)
#   --many N         small files for the many-files no-op backup (default 200000 x scale,
#                    at least 2000)
#   --entries N      entries of the synthetic manifest (default 1000000)
#   --work DIR       work folder (default $BENCH_DIR or /tmp/redundo-bench); needs about
#                    10 x the tree size free
#   --redundo BIN    use this binary instead of `cargo build --release`
#   --repo DIR       the crate to build and whose commit is reported (default: this repo)
#   --cold           drop the page cache before every timed command (needs root);
#                    default: warm cache, `sync` before every timed command
#   --no-install     do not install missing peers (rsync, rclone, GNU time, b3sum)
#   --keep           keep the copies made (the generated source trees are always kept,
#                    to be reused by the next run with the same scale)
#
# What is timed (wall clock, and peak RSS with /usr/bin/time %M):
#   backup  `redundo backup` to 3 fresh targets   vs  `cp -a SRC T` x3 + `b3sum` of SRC
#           (the peer is also reported followed by a timed `sync`, since redundo fsyncs)
#   verify  `redundo verify` (deep: source + 3)   vs  `b3sum --check` in the same 4 trees
#   noop    a second `redundo backup`              vs  `rsync -a SRC/ T/` x3
#   rclone  `rclone copy` x3, again as a no-op, and `rclone check` x3 (reference only)
#   many    no-op backup of N small files           vs  `rsync -a` x3 of the same files
#   manifest  backups and `status` over a synthetic manifest of --entries entries
#   s3      `redundo backup` to one S3 target        vs  `aws s3 cp --recursive` of SRC
#   hdfs    `redundo backup` to one HDFS target      vs  HdfsCLI's `client.upload` of SRC
#           (--hdfs URL, default $REDUNDO_TEST_WEBHDFS; `pip install hdfs`)
#           (each run to a fresh prefix, so redundo's first backup probes the server too)
# Timings are measurements, never assertions: nothing here fails because of a figure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SCALE=1
RUNS=3
OUT=""
ONLY="backup,verify,noop,rclone,many,manifest"
MANY=""
ENTRIES=1000000
WORK=${BENCH_DIR:-/tmp/redundo-bench}
REDUNDO=""
COLD=0
INSTALL=1
KEEP=0
S3_URL=${REDUNDO_TEST_S3:-}
HDFS_URL=${REDUNDO_TEST_WEBHDFS:-}
S3_BUCKET=redundo-bench
COMMAND="bench/run.sh $*"

die() { echo "bench: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --scale) SCALE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --many) MANY=$2; shift 2 ;;
        --entries) ENTRIES=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --redundo) REDUNDO=$2; shift 2 ;;
        --repo) REPO=$(cd "$2" && pwd); shift 2 ;;
        --cold) COLD=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        --s3) S3_URL=$2; shift 2 ;;
        --hdfs) HDFS_URL=$2; shift 2 ;;
        --s3-bucket) S3_BUCKET=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
python3 -c "import sys; assert float(sys.argv[1]) > 0" "$SCALE" 2>/dev/null || die "--scale must be > 0"
OUT=${OUT:-$REPO/docs/performance.md}
if [[ -z $MANY ]]; then
    MANY=$(python3 -c "import sys; print(max(2000, round(200000 * float(sys.argv[1]))))" "$SCALE")
fi
want() { [[ ",$ONLY," == *",$1,"* ]]; }
export PATH="$HOME/.cargo/bin:$PATH"

# --- peers and redundo ------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    [[ $INSTALL == 1 ]] || die "missing $*; install it or drop --no-install"
    command -v apt-get >/dev/null || die "missing $* and no apt-get to install it"
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    if [[ $APT_UPDATED == 0 ]]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if want noop || want many; then command -v rsync >/dev/null || apt_install rsync; fi
[[ -x /usr/bin/time ]] || apt_install time
if want rclone && ! command -v rclone >/dev/null; then apt_install rclone; fi
if want s3; then
    [[ -n $S3_URL ]] || die "the s3 section needs --s3 URL (or \$REDUNDO_TEST_S3)"
    command -v aws >/dev/null || die "the s3 section needs the aws command (pip install awscli)"
    [[ -n ${AWS_ACCESS_KEY_ID:-} && -n ${AWS_SECRET_ACCESS_KEY:-} ]] ||
        die "the s3 section needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
fi
if want hdfs; then
    [[ -n $HDFS_URL ]] || die "the hdfs section needs --hdfs URL (or \$REDUNDO_TEST_WEBHDFS)"
    python3 -c 'import hdfs' 2>/dev/null || die "the hdfs section needs HdfsCLI (pip install hdfs)"
fi
if ! command -v b3sum >/dev/null; then
    [[ $INSTALL == 1 ]] || die "missing b3sum; install it with 'cargo install b3sum'"
    cargo install --quiet b3sum
fi

if [[ -z $REDUNDO ]]; then
    echo "bench: building redundo in $REPO"
    cargo build --release --quiet --manifest-path "$REPO/Cargo.toml"
    REDUNDO=$REPO/target/release/redundo
fi
REDUNDO=$(cd "$(dirname "$REDUNDO")" && pwd)/$(basename "$REDUNDO")
[[ -x $REDUNDO ]] || die "$REDUNDO is not an executable"

# --- work folder and bookkeeping ---------------------------------------------------------
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results.tsv
LOG=$WORK/bench.log
: >"$RESULTS"
: >"$LOG"
echo "bench: work folder $WORK (log: $LOG)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# rclone with no config of its own (and no notice about the missing one).
export RCLONE_CONFIG=$WORK/rclone.conf
: >"$RCLONE_CONFIG"

settle() {
    sync
    if [[ $COLD == 1 ]]; then
        echo 3 >/proc/sys/vm/drop_caches || die "--cold needs a writable /proc/sys/vm/drop_caches"
    fi
}

# timed KEY RUN CMD...: runs CMD once, appends "KEY RUN seconds max_rss_kib" to the results.
# Exit codes in $OK_CODES (default "0") are accepted; any other stops the benchmark.
LAST_SECS=0
LAST_RSS=0
timed() {
    local key=$1 run=$2
    shift 2
    local tf=$WORK/.time rc=0 t0 t1
    echo "== $key run $run: $*" >>"$LOG"
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$tf" "$@" >>"$LOG" 2>&1 || rc=$?
    t1=$(date +%s%N)
    if [[ " ${OK_CODES:-0} " != *" $rc "* ]]; then
        echo "bench: '$*' exited with $rc; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    LAST_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    LAST_RSS=$(tail -n 1 "$tf")
    printf '%s\t%s\t%s\t%s\n' "$key" "$run" "$LAST_SECS" "$LAST_RSS" >>"$RESULTS"
    printf '  %-18s run %s: %8.2f s %7d MiB\n' "$key" "$run" "$LAST_SECS" $((LAST_RSS / 1024))
}

# The order of a pair flips every run, so drift (cache, thermal, writeback) hits both alike.
order() { if (($1 % 2)); then echo "redundo peer"; else echo "peer redundo"; fi; }

# --- the tree ---------------------------------------------------------------------------
TREE=$WORK/tree-$SCALE
SRC=$TREE/src
if [[ ! -f $TREE/done ]]; then
    echo "bench: generating the tree at scale $SCALE"
    rm -rf "$TREE"
    python3 "$HERE/bench.py" tree "$SRC" --scale "$SCALE" | tee "$TREE.info"
    mv "$TREE.info" "$TREE/info"
    touch "$TREE/done"
fi
TREE_BYTES=$(du -sb "$SRC" | cut -f1)
TREE_FILES=$(find "$SRC" -type f | wc -l)
AVAIL=$(df -B1 --output=avail "$WORK" | tail -n 1)
if ((AVAIL < TREE_BYTES * 10)); then
    echo "bench: warning: $((AVAIL >> 20)) MiB free in $WORK, about $((TREE_BYTES * 10 >> 20)) MiB needed" >&2
fi

# Copies made by one run are moved aside, not deleted, until the end: on ext4 without a
# journal, creating files within a minute or so of deleting many is much slower (the inode
# allocator skips recently deleted inodes), which would penalize whoever runs next. When the
# disk is too small for that, they are deleted at once and the facts say so.
TRASH=$WORK/trash
copies_per_run=0
want backup && copies_per_run=$((copies_per_run + 6))
want rclone && copies_per_run=$((copies_per_run + 3))
NEED=$((TREE_BYTES * (7 + copies_per_run * RUNS) + (4 << 30)))
if ((AVAIL > NEED)); then
    DISCARD_MODE="moved aside between runs, deleted at the end"
else
    DISCARD_MODE="deleted between runs (not enough space to keep them until the end)"
fi
discard() { # DIR...: out of the way of the next run
    local d
    for d; do
        [[ -e $d ]] || continue
        if ((AVAIL > NEED)); then
            mkdir -p "$TRASH"
            mv "$d" "$(mktemp -d "$TRASH/XXXXXX")/"
        else
            rm -rf "$d"
        fi
    done
}

R=$WORK/r          # redundo: R/cfg/redundo.toml (state in R/cfg/.redundo), R/t1..t3
P=$WORK/p          # peers: P/t1..t3 made by cp -a, P/sums from b3sum
SUMS=$P/sums
redundo_init() { # DIR SRC: a fresh config and 3 empty targets under DIR
    discard "$1"
    mkdir -p "$1/cfg"
    "$REDUNDO" init --source "$2" --target "$1/t1" --target "$1/t2" --target "$1/t3" \
        --config "$1/cfg/redundo.toml" >>"$LOG" 2>&1
}
make_sums() { (cd "$SRC" && find . -type f -print0 | xargs -0 b3sum >"$SUMS"); }

PEER_BACKUP='set -e; for t in "$2" "$3" "$4"; do cp -a "$1" "$t"; done
cd "$1" && find . -type f -print0 | xargs -0 b3sum >"$5"'
PEER_VERIFY='set -e; sums=$1; shift; for root; do (cd "$root" && b3sum --check --quiet "$sums"); done'
PEER_NOOP='set -e; for t in "$2" "$3" "$4"; do rsync -a "$1/" "$t/"; done'

if want backup; then
    echo "bench: fresh backup to 3 targets vs cp -a x3 + b3sum ($RUNS runs)"
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            if [[ $who == redundo ]]; then
                redundo_init "$R" "$SRC"
                settle
                timed backup.redundo "$run" "$REDUNDO" backup --config "$R/cfg/redundo.toml" --quiet
            else
                discard "$P"
                mkdir -p "$P"
                settle
                timed backup.peer "$run" bash -c "$PEER_BACKUP" _ "$SRC" "$P/t1" "$P/t2" "$P/t3" "$SUMS"
                peer_secs=$LAST_SECS peer_rss=$LAST_RSS
                timed backup.sync "$run" sync
                printf '%s\t%s\t%s\t%s\n' backup.peer+sync "$run" \
                    "$(awk -v a="$peer_secs" -v b="$LAST_SECS" 'BEGIN { printf "%.3f", a + b }')" \
                    "$peer_rss" >>"$RESULTS"
            fi
        done
    done
fi

# Later sections need a backed-up redundo set and the peers' copies.
if want verify || want noop; then
    if [[ ! -f $R/cfg/.redundo/manifest ]]; then
        echo "bench: setting up redundo's targets (untimed)"
        redundo_init "$R" "$SRC"
        "$REDUNDO" backup --config "$R/cfg/redundo.toml" --quiet >>"$LOG" 2>&1
    fi
    if [[ ! -f $SUMS || ! -d $P/t3 ]]; then
        echo "bench: setting up the peers' copies (untimed)"
        rm -rf "$P"
        mkdir -p "$P"
        bash -c "$PEER_BACKUP" _ "$SRC" "$P/t1" "$P/t2" "$P/t3" "$SUMS"
    fi
fi

if want verify; then
    echo "bench: deep verify of 4 trees vs b3sum --check x4 ($RUNS runs)"
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            settle
            if [[ $who == redundo ]]; then
                timed verify.redundo "$run" "$REDUNDO" verify --config "$R/cfg/redundo.toml" --quiet
            else
                timed verify.peer "$run" bash -c "$PEER_VERIFY" _ "$SUMS" "$SRC" "$R/t1" "$R/t2" "$R/t3"
            fi
        done
    done
fi

if want noop; then
    echo "bench: no-op backup vs rsync -a x3 ($RUNS runs)"
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            settle
            if [[ $who == redundo ]]; then
                timed noop.redundo "$run" "$REDUNDO" backup --config "$R/cfg/redundo.toml" --quiet
            else
                timed noop.peer "$run" bash -c "$PEER_NOOP" _ "$SRC" "$P/t1" "$P/t2" "$P/t3"
            fi
        done
    done
fi

if want rclone; then
    echo "bench: rclone copy / check for reference ($RUNS runs)"
    RC=$WORK/rc
    for run in $(seq "$RUNS"); do
        discard "$RC"
        mkdir -p "$RC"
        settle
        timed rclone.copy "$run" bash -c 'set -e; for t in "$2" "$3" "$4"; do rclone copy "$1" "$t"; done' \
            _ "$SRC" "$RC/t1" "$RC/t2" "$RC/t3"
        settle
        timed rclone.noop "$run" bash -c 'set -e; for t in "$2" "$3" "$4"; do rclone copy "$1" "$t"; done' \
            _ "$SRC" "$RC/t1" "$RC/t2" "$RC/t3"
        settle
        timed rclone.check "$run" bash -c 'set -e; for t in "$2" "$3" "$4"; do rclone check "$1" "$t"; done' \
            _ "$SRC" "$RC/t1" "$RC/t2" "$RC/t3"
    done
    [[ $KEEP == 1 ]] || discard "$RC"
fi

if want many; then
    MTREE=$WORK/many-$MANY
    if [[ ! -f $MTREE/done ]]; then
        echo "bench: generating $MANY small files"
        rm -rf "$MTREE"
        python3 "$HERE/bench.py" many "$MTREE/src" --files "$MANY" | tee "$MTREE.info"
        mv "$MTREE.info" "$MTREE/info"
        touch "$MTREE/done"
    fi
    MR=$WORK/many-r MP=$WORK/many-p
    echo "bench: no-op backup of $MANY small files vs rsync -a x3 ($RUNS runs)"
    redundo_init "$MR" "$MTREE/src"
    settle
    timed many.first 1 "$REDUNDO" backup --config "$MR/cfg/redundo.toml" --quiet
    discard "$MP"
    mkdir -p "$MP"
    settle
    timed many.cp 1 bash -c 'set -e; for t in "$2" "$3" "$4"; do cp -a "$1" "$t"; done' \
        _ "$MTREE/src" "$MP/t1" "$MP/t2" "$MP/t3"
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            settle
            if [[ $who == redundo ]]; then
                timed many.redundo "$run" "$REDUNDO" backup --config "$MR/cfg/redundo.toml" --quiet
            else
                timed many.peer "$run" bash -c "$PEER_NOOP" _ "$MTREE/src" "$MP/t1" "$MP/t2" "$MP/t3"
            fi
        done
    done
    [[ $KEEP == 1 ]] || discard "$MR" "$MP"
fi

S3_NOTE="not run"
if want s3; then
    echo "bench: backup to one S3 target vs aws s3 cp --recursive ($RUNS runs, $S3_URL, bucket $S3_BUCKET)"
    AWS=(aws --endpoint-url "$S3_URL")
    made_bucket=0
    if ! "${AWS[@]}" s3api head-bucket --bucket "$S3_BUCKET" >/dev/null 2>&1; then
        "${AWS[@]}" s3api create-bucket --bucket "$S3_BUCKET" >/dev/null
        made_bucket=1
    fi
    S3R=$WORK/s3r
    stamp=$(date +%s)
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            # A fresh prefix for every run: both sides upload everything.
            prefix="bench-$stamp-$run-$who"
            if [[ $who == redundo ]]; then
                rm -rf "$S3R"
                mkdir -p "$S3R"
                printf 'source = "%s"\n\n[[target]]\nname = "s3"\nlocation = "s3://%s/%s"\nendpoint = "%s"\n' \
                    "$SRC" "$S3_BUCKET" "$prefix" "$S3_URL" >"$S3R/redundo.toml"
                settle
                timed s3.redundo "$run" "$REDUNDO" backup --config "$S3R/redundo.toml" --quiet
            else
                settle
                timed s3.peer "$run" "${AWS[@]}" s3 cp --recursive --quiet "$SRC" "s3://$S3_BUCKET/$prefix/"
            fi
        done
    done
    # A HEAD of the bucket: the server's root may answer without naming itself.
    server=$(curl -sI "$S3_URL/$S3_BUCKET" | awk -F': ' 'tolower($1) == "server" { gsub("\r", "", $2); print $2 }')
    S3_NOTE="endpoint $S3_URL (server: ${server:-unknown}), bucket $S3_BUCKET, one fresh prefix per run; redundo with its defaults (part_size 8 MiB, one thread per core; its first backup to a target also probes the server's checksums, about 15 small requests), $(aws --version 2>&1 | cut -d' ' -f1) with its defaults (8 MiB parts, 10 requests at once)"
    rm -rf "$S3R"
    if [[ $made_bucket == 1 && $KEEP != 1 ]]; then
        "${AWS[@]}" s3 rb --force "s3://$S3_BUCKET" >/dev/null
    fi
fi

HDFS_NOTE="not run"
if want hdfs; then
    echo "bench: backup to one HDFS target vs HdfsCLI upload ($RUNS runs, $HDFS_URL)"
    HR=$WORK/hdfsr
    HDFS_BASE=/redundo-bench/$(date +%s)
    hdfscli() { python3 -c "import sys; from hdfs import InsecureClient; c = InsecureClient(sys.argv[1], user='${HADOOP_USER_NAME:-$(id -un)}'); $1" "$HDFS_URL" "${@:2}"; }
    for run in $(seq "$RUNS"); do
        for who in $(order "$run"); do
            # A fresh folder for every run: both sides upload everything.
            dest="$HDFS_BASE/$run-$who"
            if [[ $who == redundo ]]; then
                rm -rf "$HR"
                mkdir -p "$HR"
                hdfscli 'c.makedirs(sys.argv[2])' "$dest"
                printf 'source = "%s"\n\n[[target]]\nname = "hdfs"\nlocation = "%s%s"\n' \
                    "$SRC" "${HDFS_URL/http:/webhdfs:}" "$dest" >"$HR/redundo.toml"
                settle
                timed hdfs.redundo "$run" "$REDUNDO" backup --config "$HR/redundo.toml" --quiet
            else
                settle
                timed hdfs.peer "$run" python3 -c "import sys; from hdfs import InsecureClient; InsecureClient(sys.argv[1], user='${HADOOP_USER_NAME:-$(id -un)}').upload(sys.argv[2], sys.argv[3])" "$HDFS_URL" "$dest" "$SRC"
            fi
        done
    done
    hdfscli 'c.delete(sys.argv[2], recursive=True)' "$HDFS_BASE" || true
    HDFS_NOTE="NameNode $HDFS_URL, one fresh folder per run; redundo with its defaults (128 MiB blocks, one thread per core, it also computes HDFS's checksum and BLAKE3 in the same read), HdfsCLI $(python3 -c 'import hdfs; print(hdfs.__version__)') \`client.upload\` with its defaults (one file at a time)"
    rm -rf "$HR"
fi

MANIFEST_NOTE=""
if want manifest; then
    REPLICA=$WORK/manifest-$ENTRIES
    if [[ ! -f $REPLICA ]]; then
        echo "bench: generating a manifest of $ENTRIES entries"
        python3 "$HERE/bench.py" manifest "$REPLICA.tmp" --entries "$ENTRIES"
        mv "$REPLICA.tmp" "$REPLICA"
    fi
    M=$WORK/m
    mkdir -p "$M"
    rm -rf "$M/src"
    mkdir -p "$M/src"
    redundo_init "$M/set" "$M/src"
    mkdir -p "$M/set/cfg/.redundo"
    cp "$REPLICA" "$M/set/cfg/.redundo/manifest"
    echo "bench: manifest of $ENTRIES entries ($RUNS runs)"
    # The source is empty, so every entry is a file deleted from the source and kept on the
    # targets: the backup plans over all entries but copies nothing. Removing the targets'
    # replicas makes it rewrite all four.
    for run in $(seq "$RUNS"); do
        rm -f "$M"/set/t?/.redundo/manifest "$M"/set/t?/.redundo/B3SUMS
        settle
        timed manifest.save "$run" "$REDUNDO" backup --config "$M/set/cfg/redundo.toml" --quiet
    done
    for run in $(seq "$RUNS"); do
        settle
        timed manifest.load4 "$run" "$REDUNDO" backup --config "$M/set/cfg/redundo.toml" --quiet
        settle
        OK_CODES="0 1" timed manifest.status "$run" "$REDUNDO" status --config "$M/set/cfg/redundo.toml"
    done
    MANIFEST_NOTE="A synthetic replica (\`bench.py manifest\`: paths like \`projects/p03/d042/file-0342123.dat\`, 1-64 KiB files so no block lists) of $(stat -c %s "$REPLICA" | awk '{ printf "%.0f MiB", $1 / 1048576 }'), placed in the state folder of a set whose source is empty and whose 3 targets hold no replica yet."
    [[ $KEEP == 1 ]] || rm -rf "$M"
fi

# --- report -----------------------------------------------------------------------------
commit="unknown"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
    commit=$(git -C "$REPO" rev-parse --short HEAD)
    if [[ -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock) ]]; then
        commit="$commit with uncommitted changes to src/"
    fi
fi
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mnt_source=$(findmnt -no SOURCE -T "$WORK" | sed -n 1p)
mnt_fs="$(findmnt -no FSTYPE -T "$WORK" | sed -n 1p) ($(findmnt -no OPTIONS -T "$WORK" | sed -n 1p))"
journal_task=/sys/fs/ext4/$(basename "$mnt_source")/journal_task
if [[ -r $journal_task ]]; then
    if [[ $(cat "$journal_task") == "<none>" ]]; then
        mnt_fs="$mnt_fs, no journal"
    else
        mnt_fs="$mnt_fs, journal"
    fi
fi
export F_LOAD F_ENV F_DISCARD F_DATE F_COMMAND F_CPU F_NPROC F_MEM F_DISK F_FS F_KERNEL F_REDUNDO F_RUSTC F_PEERS F_TREE F_MANY F_MANIFEST F_CACHE F_ENTRIES F_S3
F_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
F_COMMAND=$COMMAND
F_CPU=$cpu
F_NPROC=$(nproc)
F_MEM=$(free -h | awk '/^Mem:/ { print $2 " total, " $7 " available" }')
F_DISK="$(df -h --output=size "$WORK" | tail -n 1 | tr -d ' ') total, $(numfmt --to=iec "$AVAIL") free at the start, on $mnt_source"
F_FS=$mnt_fs
F_KERNEL="$(uname -sr) ($(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"))"
F_REDUNDO="commit $commit, \`cargo build --release\` ($REDUNDO)"
F_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
F_PEERS="$(cp --version | sed -n 1p), $( (command -v rsync >/dev/null && rsync --version | sed -n 1p | awk '{ print "rsync " $3 }') || echo 'rsync not installed'), $(b3sum --version), $( (command -v rclone >/dev/null && rclone version | sed -n 1p) || echo 'rclone not installed')"
if want s3; then F_PEERS="$F_PEERS, $(aws --version 2>&1 | cut -d' ' -f1)"; fi
if want hdfs; then F_PEERS="$F_PEERS, HdfsCLI $(python3 -c 'import hdfs; print(hdfs.__version__)')"; fi
F_TREE="scale $SCALE: $TREE_FILES files, $((TREE_BYTES >> 20)) MiB (\`bench.py tree\`, fixed seed)"
F_MANY=$( (want many && echo "$MANY files of 1-4096 bytes, 200 per folder (\`bench.py many\`)") || echo "not run")
F_MANIFEST=$MANIFEST_NOTE
F_S3=$S3_NOTE
F_HDFS=$HDFS_NOTE
F_ENTRIES=$ENTRIES
F_ENV=$(env | grep -E '^(RAYON_NUM_THREADS|REDUNDO_[A-Z_]+)=' | tr '\n' ' ' || true)
F_ENV=${F_ENV:-none set (redundo uses one thread per core)}
F_DISCARD="copies of earlier runs $DISCARD_MODE"
# Other work on the machine skews wall times: say how busy it was.
F_LOAD="load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after (1, 5, 15 min); other processes above 5% CPU at the end: $(ps -eo pcpu=,comm= --sort=-pcpu | awk '$2 != "ps" && $2 != "run.sh" && $1 > 5 { printf "%s%s %s%%", sep, $2, $1; sep = ", " } END { if (!sep) printf "none" }')"
if [[ $COLD == 1 ]]; then
    F_CACHE="cold: \`sync\` and \`echo 3 > /proc/sys/vm/drop_caches\` before every timed command"
else
    F_CACHE="warm: every tree fits in RAM; \`sync\` (untimed) before every timed command, no cache drop"
fi
python3 - "$WORK/facts.json" <<'EOF'
import json, os, sys
e = os.environ
facts = {k: e[f"F_{v}"] for k, v in [
    ("date", "DATE"), ("command", "COMMAND"), ("cpu", "CPU"), ("nproc", "NPROC"),
    ("memory", "MEM"), ("disk", "DISK"), ("filesystem", "FS"), ("kernel", "KERNEL"),
    ("redundo", "REDUNDO"), ("rustc", "RUSTC"), ("peers", "PEERS"), ("tree", "TREE"),
    ("many", "MANY"), ("manifest", "MANIFEST"), ("cache", "CACHE"), ("environment", "ENV"),
    ("between runs", "DISCARD"), ("load", "LOAD"), ("s3", "S3"), ("hdfs", "HDFS")]}
facts["manifest_entries"] = int(e["F_ENTRIES"])
json.dump(facts, open(sys.argv[1], "w"), indent=1)
EOF
python3 "$HERE/bench.py" report "$RESULTS" "$WORK/facts.json" >"$WORK/section.md"
python3 "$HERE/bench.py" splice "$OUT" "$WORK/section.md"
if [[ $KEEP != 1 ]]; then
    rm -rf "$R" "$P"
fi
rm -rf "$TRASH"
echo
cat "$WORK/section.md"
echo
echo "bench: written to $OUT (raw figures: $RESULTS)"
