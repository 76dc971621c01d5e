"""Flags of the commands that write generated media (`generate`, `eval`, `demo`): the prompt
safety policy and the C2PA signer. The library functions take these as arguments; only the
commands read flags."""

from absl import flags

from sora_jax import provenance
from sora_jax.safety import policy

_ALLOW_UNSAFE = flags.DEFINE_boolean(
    "allow_unsafe_prompts",
    False,
    "Research use: do not enforce the prompt safety policy (recorded in every sidecar).",
)
_POLICY_FILE = flags.DEFINE_string(
    "safety_policy",
    None,
    "A prompt policy JSON file (default: sora_jax/safety/default_policy.json).",
)
_CERT = flags.DEFINE_string(
    "c2pa_cert", None, "PEM certificate chain (leaf first) to sign outputs with (C2PA)."
)
_KEY = flags.DEFINE_string("c2pa_key", None, "PEM private key of --c2pa_cert.")
_ALG = flags.DEFINE_enum("c2pa_alg", "es256", list(provenance.SIGNING_ALGS), "C2PA alg.")


def enforce_policy(prompts: list[str]) -> dict:
    """`policy.enforce` under --allow_unsafe_prompts and --safety_policy."""
    return policy.enforce(prompts, allow_unsafe=_ALLOW_UNSAFE.value, policy_file=_POLICY_FILE.value)


def signer() -> provenance.Credentials:
    """`provenance.credentials` from --c2pa_cert, --c2pa_key and --c2pa_alg."""
    return provenance.credentials(_CERT.value, _KEY.value, _ALG.value)
