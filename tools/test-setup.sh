#!/usr/bin/env bash
# Install and start a standalone ZooKeeper on loopback for the test suite and
# the quick start: a mutual-TLS port (default 2281, as nodepool expects) and a
# plain port (default 2181).  Idempotent: a second run finds it running.
#
# State (data, logs, certificates) lives in $NODEPOOL_ZK_DIR, by default
# /tmp/nodepool-zk, outside the git tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
zkdir=${NODEPOOL_ZK_DIR:-/tmp/nodepool-zk}
tls_port=${NODEPOOL_ZK_TLS_PORT:-2281}
plain_port=${NODEPOOL_ZK_PLAIN_PORT:-2181}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -f /usr/share/java/zookeeper.jar ]; then
    echo "installing ZooKeeper from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq zookeeper >/dev/null
fi
if ! command -v java >/dev/null; then
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq default-jre-headless >/dev/null
fi

mkdir -p "$zkdir/data" "$zkdir/logs"
"$here/zk-ca.sh" "$zkdir/certs" >/dev/null

ruok() {
    # The four-letter word answers on the plain port without TLS.
    { exec 3<>"/dev/tcp/127.0.0.1/$plain_port"; } 2>/dev/null || return 1
    printf ruok >&3
    local answer
    answer=$(timeout 2 cat <&3 2>/dev/null || true)
    exec 3>&-
    [ "$answer" = imok ]
}

if [ -f "$zkdir/zk.pid" ] && kill -0 "$(cat "$zkdir/zk.pid")" 2>/dev/null && ruok; then
    echo "ZooKeeper already running (pid $(cat "$zkdir/zk.pid")), TLS port $tls_port"
    exit 0
fi

cat > "$zkdir/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$zkdir/data
clientPort=$plain_port
clientPortAddress=127.0.0.1
secureClientPort=$tls_port
secureClientPortAddress=127.0.0.1
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$zkdir/certs/server-keystore.pem
ssl.keyStore.type=PEM
ssl.trustStore.location=$zkdir/certs/ca.pem
ssl.trustStore.type=PEM
ssl.clientAuth=need
admin.enableServer=false
4lw.commands.whitelist=*
maxClientCnxns=0
# Test runs write a lot: keep the last few snapshots and logs only.
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG

# zookeeper.jar's manifest lacks the netty codec/resolver jars that the TLS
# (Netty) connection factory needs, and an slf4j binding for logs.
java_dir=/usr/share/java
cp="$java_dir/zookeeper.jar:$java_dir/netty-codec.jar:$java_dir/netty-resolver.jar"
[ -f "$java_dir/slf4j-simple.jar" ] && cp="$cp:$java_dir/slf4j-simple.jar"

nohup java -Xms64m -Xmx512m -Dzookeeper.log.dir="$zkdir/logs" -cp "$cp" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$zkdir/zoo.cfg" \
    >"$zkdir/logs/zk.out" 2>&1 </dev/null &
echo $! > "$zkdir/zk.pid"

for _ in $(seq 1 120); do
    if ruok; then
        echo "ZooKeeper started (pid $(cat "$zkdir/zk.pid")): TLS 127.0.0.1:$tls_port, plain 127.0.0.1:$plain_port"
        echo "certificates: $zkdir/certs (ca.pem, client.pem, client.key); logs: $zkdir/logs"
        exit 0
    fi
    sleep 0.25
done
echo "ZooKeeper did not start; see $zkdir/logs/zk.out" >&2
tail -20 "$zkdir/logs/zk.out" >&2 || true
exit 1
