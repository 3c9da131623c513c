"""Keys, certificate signing requests and kubeconfigs: the cryptography of the certificate
backend, without any I/O. Private keys live in memory only and leave as kubeconfig bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bot.domain.errors import InvalidInput, PermanentBackendError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+:-]{0,252}$")


def check_username(username: str, *, for_certificate: bool) -> str:
    """A Kubernetes username the bot may grant to: never ``system:…``, printable, bounded."""
    if not _USERNAME.match(username):
        raise InvalidInput(
            f"'{username}' is not a usable Kubernetes username (letters, digits and . _ @ + : -)."
        )
    if username.lower().startswith("system:"):
        raise InvalidInput(f"'{username}' is reserved for Kubernetes itself (system:…).")
    if for_certificate and len(username) > 64:
        raise InvalidInput(f"'{username}' is longer than the 64 characters a certificate CN holds.")
    return username


def generate_key(algorithm: str) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = {"rsa-2048": 2048, "rsa-4096": 4096}[algorithm]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def build_csr(key: PrivateKey, username: str) -> bytes:
    """A PEM CSR with CN = username and no O: the certificate carries no group."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def check_user_csr(pem: str, username: str) -> bytes:
    """A CSR a person pasted: its signature verifies, CN is exactly theirs, it has no O."""
    try:
        csr = x509.load_pem_x509_csr(pem.strip().encode())
    except ValueError:
        raise InvalidInput("That is not a PEM certificate signing request "
                           "(-----BEGIN CERTIFICATE REQUEST-----).") from None
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, ValueError):
        valid = False
    if not valid:
        raise InvalidInput("The CSR's signature does not verify: it was altered or not signed "
                           "by its key.")
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [username]:
        raise InvalidInput(f"The CSR's common name must be exactly '{username}'; it is "
                           f"{', '.join(map(str, names)) or 'missing'}.")
    if csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        raise InvalidInput("The CSR must carry no organization (O): groups are never granted "
                           "through certificates.")
    if len(csr.subject) != 1:
        raise InvalidInput("The CSR's subject must hold only the common name.")
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCertificate:
    pem: bytes
    not_after: datetime
    serial: int


def check_issued(pem: bytes, username: str, csr_pem: bytes, ends_at: datetime,
                 slack: timedelta = timedelta(minutes=5)) -> IssuedCertificate:
    """The signer's certificate is for this user, this key, client auth, and no longer-lived
    than the grant."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PermanentBackendError(
            "the signer returned something that is not a certificate") from None
    csr = x509.load_pem_x509_csr(csr_pem)
    names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [username] or certificate.subject.get_attributes_for_oid(
            NameOID.ORGANIZATION_NAME):
        raise PermanentBackendError(
            f"the signer issued a certificate for {certificate.subject.rfc4514_string()}, "
            f"not for exactly CN={username}")
    if certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != csr.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo):
        raise PermanentBackendError("the signer's certificate does not match the request's key")
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise PermanentBackendError("the signer's certificate is not for client authentication")
    not_after = certificate.not_valid_after_utc
    if not_after > ends_at + slack:
        raise PermanentBackendError(
            f"the signer issued a certificate valid until {not_after.isoformat()}, past the "
            f"grant's end {ends_at.isoformat()}: it ignores expirationSeconds; the bot refuses "
            "certificates that outlive their grant")
    return IssuedCertificate(pem=pem, not_after=not_after, serial=certificate.serial_number)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
