"""Text encoders for the diffusion transformer: prompt -> per-token states [B, L, Dt] + mask.

- `tokenizer.py`: the WordPiece tokenizer of the pretrained encoder (shared by both encoders).
- `minilm.py`: the pretrained, frozen MiniLM-L6 sentence encoder (all-MiniLM-L6-v2), in Flax.
- `small.py`: a small trainable pre-LN transformer, the ablation.
- `encoders.py`: `make_text_encoder(config.model.text)` and a caption-embedding cache.
"""
