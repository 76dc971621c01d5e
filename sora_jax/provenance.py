"""C2PA content credentials on every video and image sora_jax writes (`generate`, `eval`, `demo`).

Each file carries an embedded, signed C2PA manifest (c2pa-python, offline): a `c2pa.created`
action whose digital source type is `trainedAlgorithmicMedia` (model output), the generator's
name and version, and an `org.sora_jax.generation` assertion with the SHA-256 of the prompt (not
the prompt itself), the task, the checkpoint step and whether the prompt policy was enforced.

Signing credentials, first found wins: the PEM files given to `credentials` (the commands'
`--c2pa_cert` / `--c2pa_key`, `output_flags.py`: chain, leaf first, and its private key), the
environment variables `SORA_JAX_C2PA_CERT` / `SORA_JAX_C2PA_KEY`, else a local **development
chain** created on first use under `$SORA_JAX_HOME/c2pa_dev` (`~/.cache/sora_jax` by default): a
CA and a leaf with the emailProtection EKU, both named "UNTRUSTED". Its CA key is discarded once
the leaf is signed. Nothing trusts that CA, so validators report such files as validly signed by
an unknown signer, never as trusted. `sora-jax verify FILE` prints a file's manifest and
validation state.
"""

import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import uuid

from sora_jax import video_io

SIGNING_ALGS = ("es256", "es384", "ps256", "ed25519")

# Formats the C2PA SDK embeds a manifest in (webm is not one of them).
SIGNABLE_SUFFIXES = (".gif", ".mov", ".mp4", ".png")
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.sora_jax.generation"
DEV_ORGANIZATION = "sora_jax development chain (UNTRUSTED)"


@dataclasses.dataclass(frozen=True)
class Credentials:
    chain_pem: bytes
    key_pem: bytes
    alg: str
    development: bool


def home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SORA_JAX_HOME", "~/.cache/sora_jax")).expanduser()


def credentials(cert=None, key=None, alg: str = "es256") -> Credentials:
    """The signer: the `cert` chain and its `key` (PEM files), else the environment, else the
    development chain (see module doc). `alg` goes with a user's key."""
    cert = cert or os.environ.get("SORA_JAX_C2PA_CERT")
    key = key or os.environ.get("SORA_JAX_C2PA_KEY")
    if bool(cert) != bool(key):
        raise ValueError("a C2PA signing certificate and its key go together (--c2pa_cert/_key)")
    if alg not in SIGNING_ALGS:
        raise ValueError(f"C2PA signing algorithm must be one of {SIGNING_ALGS}, got {alg!r}")
    if cert:
        chain, secret = (pathlib.Path(p).read_bytes() for p in (cert, key))
        _check_signing_pair(chain, secret, alg)
        return Credentials(chain, secret, alg, development=False)
    chain, secret = development_chain(home() / "c2pa_dev")
    return Credentials(chain, secret, "es256", development=True)


def _check_signing_pair(chain_pem: bytes, key_pem: bytes, alg: str) -> None:
    """ValueError unless `key_pem` is the private key of the chain's first (leaf) certificate
    and of the kind `alg` signs with: checked before anything is generated, where the C2PA SDK
    would only fail when it signs the first output."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot read the C2PA certificate chain or its key: {e}") from e
    raw = dict(encoding=serialization.Encoding.DER,
               format=serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    if key.public_key().public_bytes(**raw) != leaf.public_key().public_bytes(**raw):
        raise ValueError("the C2PA key is not the key of the chain's first (leaf) certificate")
    kinds = {"es256": ec.EllipticCurvePrivateKey, "es384": ec.EllipticCurvePrivateKey,
             "ps256": rsa.RSAPrivateKey, "ed25519": ed25519.Ed25519PrivateKey}  # fmt: skip
    if not isinstance(key, kinds[alg]):
        raise ValueError(f"--c2pa_alg {alg} cannot sign with a {type(key).__name__}")
    curves = {"es256": ec.SECP256R1, "es384": ec.SECP384R1}
    if alg in curves and not isinstance(key.curve, curves[alg]):
        raise ValueError(f"--c2pa_alg {alg} signs with {curves[alg].name}, not {key.curve.name}")


def development_chain(directory: pathlib.Path) -> tuple[bytes, bytes]:
    """(chain PEM, leaf key PEM) of the local development chain, created on first use."""
    chain_path, key_path = directory / "chain.pem", directory / "signer_key.pem"
    if not chain_path.exists() or not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        chain, key = new_chain(DEV_ORGANIZATION)
        key_tmp = directory / f".{uuid.uuid4().hex}.tmp"
        key_tmp.write_bytes(key)
        key_tmp.chmod(0o600)
        os.replace(key_tmp, key_path)
        chain_tmp = directory / f".{uuid.uuid4().hex}.tmp"
        chain_tmp.write_bytes(chain)
        os.replace(chain_tmp, chain_path)
        (directory / "README.txt").write_text(
            "UNTRUSTED: sora_jax's local C2PA development chain, a throwaway CA (its key was\n"
            "discarded) and a signer certificate. No one trusts it: files signed with it validate\n"
            "as signed, by an untrusted signer. Configure your own with --c2pa_cert/--c2pa_key\n"
            "or SORA_JAX_C2PA_CERT/SORA_JAX_C2PA_KEY.\n"
        )
    return chain_path.read_bytes(), key_path.read_bytes()


def new_chain(organization: str) -> tuple[bytes, bytes]:
    """A fresh (chain PEM: signer + CA, signer key PEM) for `organization`: an EC P-256 CA and a
    C2PA-acceptable signer (digitalSignature, emailProtection EKU). The CA key is not kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common):
        return x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ])  # fmt: skip

    def usage(sign_certs):
        return x509.KeyUsage(
            digital_signature=not sign_certs, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=sign_certs,
            crl_sign=sign_certs, encipher_only=False, decipher_only=False,
        )  # fmt: skip

    def certificate(subject, issuer, public, days):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = name(f"{organization} CA")
    ca = (
        certificate(ca_name, ca_name, ca_key.public_key(), 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign_certs=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        certificate(name(f"{organization} signer"), ca_name,
                    leaf_key.public_key(), 3650)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, key


@functools.cache
def version() -> str:
    return importlib.metadata.version("sora_jax")


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def manifest(title: str, generation: dict) -> dict:
    agent = {"name": "sora_jax", "version": version()}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED,
                            "softwareAgent": agent,
                        }
                    ]
                },
            },
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


def write_video(
    path,
    frames,
    *,
    fps: float,
    generation: dict,
    signer: Credentials | None = None,
):
    """`video_io.write_video` plus an embedded, signed C2PA manifest; written whole or not at
    all. `generation` becomes the `org.sora_jax.generation` assertion (no raw prompts);
    `signer`: None signs with `credentials()` (environment or development chain)."""
    import c2pa

    path = pathlib.Path(path)
    if path.suffix.lower() not in SIGNABLE_SUFFIXES:
        raise ValueError(
            f"{path}: C2PA credentials cannot be embedded in {path.suffix} files; use one of "
            f"{SIGNABLE_SUFFIXES}"
        )
    creds = signer or credentials()
    unsigned = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.unsigned{path.suffix}")
    signed = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.signed{path.suffix}")
    try:
        video_io.write_video(unsigned, frames, fps=fps)
        info = c2pa.C2paSignerInfo(
            getattr(c2pa.C2paSigningAlg, creds.alg.upper()), creds.chain_pem, creds.key_pem, None
        )
        # No thumbnail in the manifest: c2pa renders one by decoding the whole file, which took
        # 2.5 s of a 2.8 s signed 17x64x64 GIF here (0.02 s without it).
        settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        with (
            c2pa.Signer.from_info(info) as c2pa_signer,
            c2pa.Context(settings) as context,
            c2pa.Builder(manifest(path.name, generation), context=context) as builder,
        ):
            builder.sign_file(unsigned, signed, c2pa_signer)
        os.replace(signed, path)
    finally:
        unsigned.unlink(missing_ok=True)
        signed.unlink(missing_ok=True)


def read(path) -> dict | None:
    """{state, generator, actions, generation, signer, development, failures} of a file's
    active manifest, or None when it has none. State: "Trusted", "Valid" (signature and
    hashes hold, signer not on a trust list) or "Invalid"."""
    import c2pa

    reader = c2pa.Reader.try_create(str(path))
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    active = store["manifests"][store["active_manifest"]]
    actions, generation = [], None
    for assertion in active.get("assertions", []):
        if assertion["label"].startswith("c2pa.actions"):
            actions += assertion["data"].get("actions", [])
        elif assertion["label"] == GENERATION_LABEL:
            generation = assertion["data"]
    signer = active.get("signature_info", {})
    return {
        "state": state,
        "generator": active.get("claim_generator_info", []),
        "actions": actions,
        "generation": generation,
        "signer": {k: signer.get(k) for k in ("issuer", "common_name", "alg", "time")},
        "development": signer.get("issuer") == DEV_ORGANIZATION,
        "failures": results.get("activeManifest", {}).get("failure", []),
    }
