"""C2PA credentials: signed with the development chain or the user's, read back, tamper-evident."""

import subprocess
import sys

import numpy as np
import pytest

from sora_jax import provenance

VIDEO = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
GENERATION = {"prompt_sha256": provenance.prompt_hash("a red circle"), "task": "t2v"}


def _verify(*paths):
    return subprocess.run(
        [sys.executable, "-m", "sora_jax.verify", *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_development_chain_signs_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("SORA_JAX_HOME", str(tmp_path / "home"))
    for name, frames in (("a.mp4", VIDEO), ("a.gif", VIDEO), ("a.png", VIDEO[:1])):
        provenance.write_video(tmp_path / name, frames, fps=8, generation=GENERATION)
        record = provenance.read(tmp_path / name)
        assert record["state"] == "Valid" and record["development"], name
        assert record["generation"] == GENERATION
        assert record["generator"][0]["name"] == "sora_jax"
        [action] = record["actions"]
        assert action["action"] == "c2pa.created"
        assert action["digitalSourceType"] == provenance.TRAINED
    chain = tmp_path / "home" / "c2pa_dev"
    assert (chain / "signer_key.pem").stat().st_mode & 0o777 == 0o600
    assert "UNTRUSTED" in (chain / "README.txt").read_text()
    first = (chain / "chain.pem").read_bytes()
    provenance.write_video(tmp_path / "b.mp4", VIDEO, fps=8, generation=GENERATION)
    assert (chain / "chain.pem").read_bytes() == first  # created once, then reused
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.gif",
        "a.mp4",
        "a.png",
        "b.mp4",
        "home",
    ]
    with pytest.raises(ValueError, match="cannot be embedded in .webm"):
        provenance.write_video(tmp_path / "c.webm", VIDEO, fps=8, generation=GENERATION)
    assert not (tmp_path / "c.webm").exists()


def test_tampered_or_unsigned_files_fail_verification(tmp_path):
    signed = tmp_path / "signed.mp4"
    provenance.write_video(signed, VIDEO, fps=8, generation=GENERATION)
    ok = _verify(signed)
    assert ok.returncode == 0, ok.stderr
    assert "Valid" in ok.stdout and "trusted by no one" in ok.stdout
    assert "trainedAlgorithmicMedia" in ok.stdout
    data = bytearray(signed.read_bytes())
    data[-100] ^= 0xFF  # a byte of the encoded frames
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    assert provenance.read(tampered)["state"] == "Invalid"
    bad = _verify(tampered)
    assert bad.returncode == 1 and "Invalid" in bad.stdout and "failure:" in bad.stdout
    plain = tmp_path / "plain.mp4"
    provenance.video_io.write_video(plain, VIDEO, fps=8)
    none = _verify(plain)
    assert none.returncode == 2
    assert none.stderr.strip().splitlines()[-1].endswith("plain.mp4: no C2PA manifest")


def test_the_users_certificate_signs_when_configured(tmp_path, monkeypatch):
    chain, key = provenance.new_chain("Example Studio")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    monkeypatch.setenv("SORA_JAX_C2PA_CERT", str(tmp_path / "chain.pem"))
    monkeypatch.setenv("SORA_JAX_C2PA_KEY", str(tmp_path / "key.pem"))
    provenance.write_video(tmp_path / "v.mp4", VIDEO, fps=8, generation=GENERATION)
    record = provenance.read(tmp_path / "v.mp4")
    assert record["state"] == "Valid" and not record["development"]
    assert record["signer"]["issuer"] == "Example Studio"
    assert record["signer"]["common_name"] == "Example Studio signer"
    monkeypatch.delenv("SORA_JAX_C2PA_KEY")
    with pytest.raises(ValueError, match="go together"):
        provenance.credentials()
    # Given files (the commands' --c2pa_cert / --c2pa_key) win over the environment.
    monkeypatch.setenv("SORA_JAX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SORA_JAX_C2PA_CERT")
    signer = provenance.credentials(tmp_path / "chain.pem", tmp_path / "key.pem")
    provenance.write_video(tmp_path / "w.gif", VIDEO, fps=8, generation=GENERATION, signer=signer)
    assert provenance.read(tmp_path / "w.gif")["signer"]["issuer"] == "Example Studio"
    with pytest.raises(ValueError, match="signing algorithm"):
        provenance.credentials(alg="md5")
    # A key that does not sign the leaf, or of the wrong kind or curve for --c2pa_alg, or not a
    # key at all, is refused before anything is generated.
    _, other_key = provenance.new_chain("Someone Else")
    (tmp_path / "other.pem").write_bytes(other_key)
    with pytest.raises(ValueError, match="not the key of the chain"):
        provenance.credentials(tmp_path / "chain.pem", tmp_path / "other.pem")
    with pytest.raises(ValueError, match="ps256 cannot sign"):
        provenance.credentials(tmp_path / "chain.pem", tmp_path / "key.pem", "ps256")
    with pytest.raises(ValueError, match="es384 signs with secp384r1, not secp256r1"):
        provenance.credentials(tmp_path / "chain.pem", tmp_path / "key.pem", "es384")
    with pytest.raises(ValueError, match="cannot read"):
        provenance.credentials(tmp_path / "chain.pem", tmp_path / "chain.pem")


def test_generate_refuses_missing_credentials_before_writing(tmp_path):
    out = tmp_path / "o.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "sora_jax.generate", f"--checkpoint={tmp_path}/none",
         "--prompt=a red circle", f"--out={out}", f"--c2pa_cert={tmp_path}/chain.pem",
         f"--c2pa_key={tmp_path}/key.pem"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "chain.pem" in proc.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())  # refused before the (missing) checkpoint was read
