#!/bin/sh
# tests/unit/dataplane/tls/make-certs.sh <dir>: writes the certificates that
# test_tls.c loads into <dir> (an empty temp dir the caller removes):
#   ca.pem                  the client CA (also signs the server certificates)
#   srv-rsa.{pem,key}       RSA, CN=a.example.com, SAN a.example.com
#   srv-ec.{pem,key}        ECDSA P-256, CN=b.example.com, SAN b.example.com *.b.example.com
#   srv-ip.{pem,key}        ECDSA P-256, CN=backend, SAN IP 127.0.0.1 and ::1 (no DNS name)
#   ca2.pem                 another CA (self-signed "wrong CA")
#   client.{pem,key}        CA-signed, CN=client1, SAN URI spiffe://example.org/ns/default/sa/client1
#                           and DNS client1.example.org; client.pin = SHA-256 of its SPKI
#   revoked.{pem,key}       CA-signed, CN=revoked, listed in crl.pem
#   expired.{pem,key}       CA-signed, CN=expired, valid only in 2020
#   wrongca.{pem,key}       CN=client1 signed by another CA
#   other.key               an RSA key matching no certificate
set -eu
d=$1
cd "$d"
exec >log.txt 2>&1

mkdir ca
: >ca/index.txt
echo 1000 >ca/serial
cat >ca.cnf <<'CNF'
[ca]
default_ca = lbtest
[lbtest]
dir = ./ca
database = ./ca/index.txt
serial = ./ca/serial
new_certs_dir = ./ca
certificate = ./ca.pem
private_key = ./ca.key
default_md = sha256
default_days = 30
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
[server_ext]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
[srv_rsa]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:a.example.com
[srv_ec]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:b.example.com, DNS:*.b.example.com
[srv_ip]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:::1
[client_ext]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://example.org/ns/default/sa/client1, DNS:client1.example.org
[plain_client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
CNF

selfsigned() { # <name> <cn>
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
csr() { # <name> <cn> <key algorithm options...>
    n=$1 cn=$2
    shift 2
    openssl req -new -nodes "$@" -keyout "$n.key" -out "$n.csr" -subj "/CN=$cn"
}
sign() { # <name> <extensions section> [ca options...]
    n=$1 ext=$2
    shift 2
    openssl ca -batch -config ca.cnf -extensions "$ext" -in "$n.csr" -out "$n.pem" -notext "$@"
}

selfsigned ca "lb test CA"
selfsigned ca2 "wrong CA"

csr srv-rsa a.example.com -newkey rsa:2048
sign srv-rsa srv_rsa
csr srv-ec b.example.com -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign srv-ec srv_ec
csr srv-ip backend -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign srv-ip srv_ip
csr client client1 -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign client client_ext
csr revoked revoked -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign revoked plain_client
csr expired expired -newkey ec -pkeyopt ec_paramgen_curve:P-256
sign expired plain_client -startdate 20200101000000Z -enddate 20200201000000Z
openssl ca -batch -config ca.cnf -revoke revoked.pem
openssl ca -batch -config ca.cnf -gencrl -out crl.pem

csr wrongca client1 -newkey ec -pkeyopt ec_paramgen_curve:P-256
openssl x509 -req -in wrongca.csr -CA ca2.pem -CAkey ca2.key -CAcreateserial -days 30 \
    -extfile ca.cnf -extensions client_ext -out wrongca.pem

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key
openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform DER |
    openssl dgst -sha256 -binary >client.pin
