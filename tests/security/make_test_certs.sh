#!/bin/sh
# Writes a throwaway PKI for the security tests into DIR (created if absent):
#   ca.pem / ca.key            a self-signed CA
#   server.pem / server.key    signed by it, SAN 127.0.0.1, ::1, localhost
#   client.pem / client.key    signed by it, for mutual TLS (clientAuth)
#   other_ca.pem               an unrelated CA (a client trusting only it must fail)
#   other_client.pem / .key    a client cert signed by the unrelated CA
# EC P-256 keys, valid for one day: nothing here is meant to outlive a test run.
#   tests/security/make_test_certs.sh /tmp/qlayer-certs
set -eu
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 1 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$1.pem"
}
leaf() {  # leaf NAME CA CN EXTFILE-LINES
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 -days 1 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "qlayer test CA"
ca other_ca "unrelated test CA"
leaf server ca "qlayer test server" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"
leaf client ca "qlayer test client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
leaf other_client other_ca "unrelated client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ./*.srl
