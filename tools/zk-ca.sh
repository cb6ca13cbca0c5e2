#!/usr/bin/env bash
# Create a throw-away CA plus a server and a client certificate for a local
# ZooKeeper with mutual TLS.  Usage: tools/zk-ca.sh DIR
# Idempotent: existing files are kept, so clients keep trusting the server.
set -euo pipefail
dir=${1:?usage: zk-ca.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=3650
san="subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

if [ ! -s ca.pem ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days "$days" \
        -subj "/CN=nodepool-test-ca" -keyout ca.key -out ca.pem 2>/dev/null
fi

make_cert() {
    local name=$1 cn=$2
    [ -s "$name.pem" ] && return 0
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf '%s\n' "$san" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key \
        -CAcreateserial -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}
make_cert server localhost
make_cert client nodepool-client
# ZooKeeper's PEM keystore wants the key and the certificate in one file.
cat server.key server.pem > server-keystore.pem
chmod 600 ./*.key server-keystore.pem
echo "certificates in $dir"
