"""A spacetime patch discriminator for the VAE's optional adversarial loss."""

from flax import linen as nn

from sora_jax.models.vae import CausalConv3d


class PatchDiscriminator(nn.Module):
    """Video [B, T, H, W, 3] in [-1, 1] -> real/fake logits per spacetime patch [B, t, h, w, 1].

    Causal 3D convolutions, each halving space (and, after the first, time), with leaky ReLU and
    no normalisation, so each logit judges one local spacetime window (PatchGAN in 3D).
    """

    channels: tuple[int, ...] = (32, 64, 128)
    conv_impl: str = "matmul"  # see CausalConv3d

    @nn.compact
    def __call__(self, video_BxTxHxWx3):
        x = video_BxTxHxWx3
        for i, features in enumerate(self.channels):
            strides = (1 if i == 0 else 2, 2, 2)
            x = CausalConv3d(features, strides=strides, conv_impl=self.conv_impl)(x)
            x = nn.leaky_relu(x, 0.2)
        return CausalConv3d(1, conv_impl=self.conv_impl)(x)
