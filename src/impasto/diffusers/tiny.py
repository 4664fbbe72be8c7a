"""Tiny random-weight pipelines built offline, for tests, examples and smoke checks.

Real checkpoints are gigabytes and need a model hub; these are a few megabytes, build in
well under a second on CPU and exercise the exact code paths a real model does (tokenizer,
text encoder, UNet, VAE, scheduler, LoRA). Their images are noise: the weights are random.

Every module is built after ``torch.manual_seed`` and put in ``eval()`` mode, so a given
seed always gives the same weights. The SD UNet has ``in_channels=4`` so one set of weights
serves text2img, img2img and inpaint.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .pipelines import quiet

__all__ = ["build_tiny_lora", "build_tiny_sd", "build_tiny_sdxl", "build_tiny_svd"]

F = TypeVar("F", bound=Callable[..., Any])

# A few whole words merged into one token each, so common test prompts stay short.
_WORDS = ("a", "an", "the", "of", "painting", "photo", "cat", "dog", "squirrel", "red", "blue")


def _quietly(build: F) -> F:
    """Run a builder with library logs, warnings and progress bars silenced."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet():
            return build(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_tokenizer(words: Sequence[str] = _WORDS) -> Any:
    """A working byte-level CLIP tokenizer built without any download (77 tokens max).

    Each of ``words`` gets a token of its own; any other word is spelled out in characters.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for tok in chars + [c + "</w>" for c in chars]:
        vocab[tok] = len(vocab)
    merges: dict[tuple[str, str], int] = {}
    for word in words:
        # Split the word as the merges so far would, then join what is left, left to right.
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], merges)
        while len(pieces) > 1:
            merges.setdefault((pieces[0], pieces[1]), len(merges))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    # The end token must have the highest id: CLIP pools the hidden state at the EOS position.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding: merge the best-ranked adjacent pair until none is known."""
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), pair) for pair in itertools.pairwise(pieces)]
        rank, best = min(pairs)
        if rank == len(ranks):
            break
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def _text_encoder(tok: Any, *, hidden: int, layers: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        vocab_size=len(tok),
        max_position_embeddings=77,
        hidden_size=hidden,
        intermediate_size=37 if hidden >= 32 else 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4 if hidden >= 32 else 2,
        layer_norm_eps=1e-5,
        hidden_act="gelu" if projection else "quick_gelu",
        projection_dim=projection or hidden,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def _seeded(seed: int, build: Any) -> Any:
    import torch

    torch.manual_seed(seed)
    module = build()
    return module.eval() if hasattr(module, "eval") else module


def _save(pipe: Any, path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@_quietly
def build_tiny_sd(path: str | Path, *, seed: int = 0, micro: bool = False) -> Path:
    """Save a tiny Stable Diffusion 1.x pipeline (2.1 M params; ``micro``: 35 k) to ``path``.

    The VAE has two blocks, so 64x64 images have 32x32 latents.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    ch = (4, 8) if micro else (32, 64)
    groups = 2 if micro else 32
    text_hidden = 8 if micro else 32
    tok = tiny_tokenizer()
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            block_out_channels=ch,
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=text_hidden,
            norm_num_groups=groups,
            attention_head_dim=2 if micro else 8,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKL(
            block_out_channels=list(ch),
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            norm_num_groups=groups,
            sample_size=64,
        ),
    )
    text_encoder = _seeded(
        seed, lambda: _text_encoder(tok, hidden=text_hidden, layers=2 if micro else 5)
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    return _save(pipe, path)


@_quietly
def build_tiny_sdxl(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny SDXL pipeline (two text encoders, text-time conditioning) to ``path``."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    tok = tiny_tokenizer()
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,
            cross_attention_dim=64,
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=128,
        ),
    )
    te1 = _seeded(seed, lambda: _text_encoder(tok, hidden=32, layers=5))
    te2 = _seeded(seed, lambda: _text_encoder(tok, hidden=32, layers=5, projection=32))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tiny_tokenizer(),
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )
    return _save(pipe, path)


@_quietly
def build_tiny_svd(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Stable Video Diffusion pipeline to ``path``.

    Attention sits at the low-resolution level (3x faster on CPU than diffusers' test
    layout); the CLIP vision tower takes 224x224 because SVD always resizes to that.
    """
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = _seeded(
        seed,
        lambda: UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=32,
            in_channels=8,
            out_channels=4,
            down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
            up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
            cross_attention_dim=32,
            num_attention_heads=8,
            projection_class_embeddings_input_dim=96,
            addition_time_embed_dim=32,
            num_frames=8,  # the default frame count a request gets
        ),
    )
    vae = _seeded(
        seed,
        lambda: AutoencoderKLTemporalDecoder(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            latent_channels=4,
        ),
    )
    image_encoder = _seeded(
        seed,
        lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                num_hidden_layers=5,
                num_attention_heads=4,
                image_size=224,
                intermediate_size=37,
                patch_size=32,
            )
        ),
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        trained_betas=None,
        use_karras_sigmas=True,
    )
    pipe = StableVideoDiffusionPipeline(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        scheduler=scheduler,
    )
    return _save(pipe, path)


@_quietly
def build_tiny_lora(
    pipeline_dir: str | Path, out_dir: str | Path, *, seed: int = 0, rank: int = 4
) -> Path:
    """Save a random LoRA adapter for the tiny SD UNet in ``pipeline_dir`` to ``out_dir``.

    The adapter targets the UNet's attention projections and is written in diffusers' LoRA
    format (``pytorch_lora_weights.safetensors``), so ``pipe.load_lora_weights(out_dir)``
    reads it. Its B matrices are random (peft starts them at zero), so it visibly changes
    the output.
    """
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_dir) / "unet")
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights="gaussian",
        target_modules=["to_k", "to_q", "to_v", "to_out.0"],
    )
    torch.manual_seed(seed)
    unet.add_adapter(config)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers)
    return out


def ensure_in_store(store: Any, name: str, build: Callable[..., Path]) -> None:
    """Build a tiny model with ``build(path, seed=0)`` and import it as ``name`` unless the
    store already has ``name:latest`` (what the tiny example packages do on first load)."""
    import tempfile

    from ..errors import NotFound

    try:
        store.resolve(f"{name}:latest")
    except NotFound:
        logging.getLogger("impasto.diffusers").info(
            "building %s into the model store at %s (first start only)", name, store.home
        )
        with tempfile.TemporaryDirectory() as tmp:
            store.import_folder(name, build(Path(tmp) / name, seed=0))
