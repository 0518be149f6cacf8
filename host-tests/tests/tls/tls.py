"""Certificates and an mTLS client for host-tests/tests/it/envoy_mtls.rs, with the `cryptography` package and the
standard library's `ssl` (nothing here is a secret: the keys are made fresh for each test run).

  tls.py certs DIR                 writes ca.pem, server.pem/server.key (127.0.0.1), and client certificates
                                   bot.pem/bot.key (URI SAN spiffe://acme.example/agents/support/bot-1),
                                   other.pem/other.key (URI SAN spiffe://acme.example/agents/support/bot-9),
                                   nosan.pem/nosan.key (a subject, no URI SAN)
  tls.py get HOST:PORT PATH CA [CERT KEY] [NAME:VALUE ...]
                                   one HTTPS request; prints {"status", "body"} or {"error"} (refused handshake)
"""
import datetime
import json
import socket
import ssl
import sys
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def certs(out):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warden test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write_cert(f"{out}/ca.pem", ca)

    def leaf(name, cn, sans, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        write_cert(f"{out}/{name}.pem", b.sign(ca_key, hashes.SHA256()))
        write_key(f"{out}/{name}.key", key)

    leaf("server", "127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ExtendedKeyUsageOID.SERVER_AUTH)
    leaf("bot", "bot-1", [x509.UniformResourceIdentifier("spiffe://acme.example/agents/support/bot-1")],
         ExtendedKeyUsageOID.CLIENT_AUTH)
    leaf("other", "bot-9", [x509.UniformResourceIdentifier("spiffe://acme.example/agents/support/bot-9")],
         ExtendedKeyUsageOID.CLIENT_AUTH)
    leaf("nosan", "no-uri-san", None, ExtendedKeyUsageOID.CLIENT_AUTH)


def get(addr, path, ca, rest):
    cert = key = None
    if len(rest) >= 2 and not ":" in rest[0]:
        cert, key, rest = rest[0], rest[1], rest[2:]
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    headers = "".join(f"{h}\r\n" for h in rest)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: crm.acme.example\r\n{headers}connection: close\r\n\r\n"
                          .encode())
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    except (ssl.SSLError, ConnectionError, OSError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return
    if not data:
        print(json.dumps({"error": "connection closed without a response"}))
        return
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    print(json.dumps({"status": status, "body": body.decode("utf-8", "replace")}))


if __name__ == "__main__":
    if sys.argv[1] == "certs":
        certs(sys.argv[2])
    else:
        get(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
