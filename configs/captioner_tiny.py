"""Tiny video captioner (Sora's recaptioning model) for a 2-core CPU.

    sora-jax train-captioner --config configs/captioner_tiny.py --workdir workdirs/captioner

Learns to write Shapes World's detailed captions from pixels: 17x64x64 clips rendered on the fly
(`:sizes=mixed` adds the other shapes of DESIGN.md's mix; the model reads any of them). Its own
byte-level BPE is trained on the run's first captions before step 0. `:input_color_swap=P`
redraws colour words of the decoder's input at random (0.5; 0 turns it off).
"""

import ml_collections

from sora_jax import config_lib


def get_config(arg=None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(
        arg, batch=32, steps=5000, sizes="fixed", width=128, input_color_swap=0.5
    )
    config = config_lib.load_sibling(__file__, "default").get_config(
        f"batch={arg.batch},sizes={arg.sizes}"
    )
    config.kind = "captioner"
    config.data.detailed_caption_prob = 1.0  # it learns to write the detailed captions

    config.tokenizer = ml_collections.ConfigDict()
    config.tokenizer.vocab_size = 512
    config.tokenizer.corpus_clips = 4000  # captions of clips 0.. of the training source

    config.model = ml_collections.ConfigDict()
    config.model.width = arg.width
    config.model.heads = 4
    # Measured train steps at batch 32 on this CPU: 4+3 layers 1.94 s, 2+2 layers 0.96 s.
    config.model.encoder_depth = 2
    config.model.decoder_depth = 2
    # One token per 16x16 patch of every frame: 272 tokens for a 17x64x64 clip.
    config.model.patch = 16
    # Patches also see each frame's change since the previous one (motion, speed and cuts are
    # local there); measured in the closing note of issue 8 against pixels only.
    config.model.frame_differences = True
    # And each frame's colour-free silhouette (one channel): a shape looks the same in every
    # colour there (experiments/captioner_shortcut/RESULTS.md).
    config.model.silhouettes = True
    config.model.max_length = 160  # BOS + caption + EOS; Shapes World's longest 17-frame is ~120

    # Probability that a colour word of the decoder's input is redrawn from all colours (its
    # targets never change), so the shape after a colour is read from the video, not guessed
    # from the colour (issue #8). 0: the captioner shipped before 2026-12-06.
    config.input_color_swap = arg.input_color_swap

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.98
    config.optimizer.weight_decay = 0.01
    config.optimizer.grad_clip = 1.0

    config.total_steps = arg.steps
    config.log_every = 50
    config.checkpoint_every = 250
    config.sample_every = 500  # caption held-out clips and score them (captions_<step>.jsonl)
    config.sample_clips = 64
    config.keep_checkpoints = 2
    return config
