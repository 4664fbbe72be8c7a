"""Train the tiny painter from scratch on CPU and save it as a Stable Diffusion pipeline.

    python examples/tiny-painter/train.py --out examples/tiny-painter/data/pipeline

1. Draws its own dataset with Pillow (scenes.py): shapes of six colors on plain backgrounds,
   each with an English prompt.
2. Builds a CLIP tokenizer whose vocabulary has a token per known word (no download).
3. Trains a small AutoencoderKL (64x64 images <-> 4x16x16 latents), then encodes the dataset.
4. Trains a small CLIP text encoder and UNet together on the latents: v-prediction with
   min-SNR weighting, the prompt dropped 10% of the time so classifier-free guidance works,
   and an exponential moving average of the weights, which is what gets saved.
5. Saves a standard diffusers ``StableDiffusionPipeline`` folder (safetensors), a
   ``SHA256SUMS`` beside it and ``training.json`` (settings, losses, times).

Deterministic given ``--seed`` and ``--threads`` (torch's float results depend on the
thread count). The defaults take about 17 minutes of wall time on two CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Threads that wait sleep instead of spinning: on a shared machine a spinning OpenMP thread
# whose partner was preempted made training steps ten times slower. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scenes import BACKGROUNDS, COLORS, SIZE, WORDS, Scene, draw, random_scene

LATENT = SIZE // 4
"""Latent side: the VAE has three blocks, so it halves the image side twice."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="pipeline folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it)")
    p.add_argument("--images", type=int, default=8192, help="scenes in the dataset")
    p.add_argument("--vae-steps", type=int, default=700)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--latent-noise", type=float, default=0.25, help="most noise on decoder input")
    p.add_argument("--unet-steps", type=int, default=2400)
    p.add_argument("--unet-batch", type=int, default=32)
    p.add_argument("--unet-lr", type=float, default=6e-4)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    p.add_argument("--uncond", type=float, default=0.1, help="share of empty prompts (for CFG)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--vae", type=Path, default=None, help="reuse this trained VAE folder")
    p.add_argument(
        "--unet", type=Path, default=None,
        help="reuse the UNet and text encoder of this trained pipeline folder (trains the VAE)",
    )  # fmt: skip
    p.add_argument("--save-at", default="", help="also save the pipeline at these UNet steps")
    p.add_argument(
        "--quick", action="store_true", help="a few steps on a few scenes (a smoke test)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.log_every = 128, 6
        args.vae_steps, args.vae_batch, args.unet_steps, args.unet_batch = 24, 8, 30, 16
    return args


# -- components --------------------------------------------------------------------------------


def build_tokenizer() -> Any:
    from impasto.diffusers.tiny import tiny_tokenizer

    return tiny_tokenizer(WORDS)


def build_text_encoder(tok: Any) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_position_embeddings=tok.model_max_length,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(config)


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=[8, 16, 32],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        layers_per_block=1,
        latent_channels=4,
        # One group: a normalization per channel would throw away the absolute level of each
        # color channel, and with it which color a flat region has.
        norm_num_groups=1,
        scaling_factor=1.0,  # the latents are normalized already
        sample_size=SIZE,
        mid_block_add_attention=False,  # convolutions see far enough at this size
    )


def build_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=2,  # diffusers reads this as the number of heads
        norm_num_groups=16,
        # The prompt, attention-pooled, also joins the timestep embedding that scales and
        # shifts every ResNet block: global facts (shape, count) reach all of the UNet
        # directly, not only through cross-attention, and are learned much sooner.
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        resnet_time_scale_shift="scale_shift",
    )


def build_scheduler() -> Any:
    """The training noise schedule; every diffusers scheduler can be made from its config."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.0001,
        beta_end=0.02,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        steps_offset=1,
    )


# -- data --------------------------------------------------------------------------------------


def make_dataset(n: int, seed: int, tok: Any) -> tuple[torch.Tensor, torch.Tensor, list[Scene]]:
    """``n`` scenes as uint8 images (n, 3, SIZE, SIZE), token ids (n, 77) and the scenes."""
    rng = random.Random(seed)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    drawn = []
    for i in range(n):
        scene = random_scene(rng)
        images[i] = np.asarray(draw(scene, rng))
        drawn.append(scene)
    ids = tokenize(tok, [scene.prompt for scene in drawn])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ids, drawn


def tokenize(tok: Any, prompts: list[str]) -> torch.Tensor:
    """Token ids exactly as the Stable Diffusion pipeline makes them (padded to 77)."""
    return tok(
        prompts,
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches."""
    batch = min(batch, n)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield order[i : i + batch]


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = min(100, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Log:
    """Loss history, averaged per ``every`` steps, and printed."""

    def __init__(self, name: str, total: int, every: int) -> None:
        self.name, self.total, self.every = name, total, every
        self.points: list[tuple[int, float]] = []
        self._sum, self._n = 0.0, 0
        self.started = time.perf_counter()

    def add(self, step: int, loss: float) -> None:
        self._sum += loss
        self._n += 1
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            mean = self._sum / self._n
            self.points.append((step + 1, mean))
            elapsed = time.perf_counter() - self.started
            print(
                f"{self.name} {step + 1}/{self.total} loss {mean:.5f} ({elapsed:.0f} s)", flush=True
            )
            self._sum, self._n = 0.0, 0


# -- training ----------------------------------------------------------------------------------


SHAPE_CODES = {"circle": -2.0, "square": -1.0, "triangle": 1.0, "diamond": 2.0}
"""The value the fourth latent channel takes inside a shape of each kind."""


def coverage(images: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
    """How much of each pixel the shapes cover (0..1, antialiased edges in between): the
    pixel's position on the line from the background color to the shape color."""
    fg = torch.tensor([COLORS[s.color] for s in scenes], dtype=torch.float32)[:, :, None, None]
    bg = torch.tensor([BACKGROUNDS[s.background] for s in scenes], dtype=torch.float32)
    bg = bg[:, :, None, None]
    d = fg - bg
    share = ((images.float() - bg) * d).sum(1, keepdim=True) / (d * d).sum(1, keepdim=True)
    return share.clamp(0.0, 1.0)


def latent_targets(images: torch.Tensor, scenes: list[Scene], batch: int = 1024) -> torch.Tensor:
    """The latents the VAE is taught, a small picture rather than a free code, which both
    the decoder and the UNet learn far faster: the first three channels are each 4x4 pixel
    block's mean color, the fourth is the share of the block the shapes cover times a value
    that names the shape (``SHAPE_CODES``). The shape is then a property of a region, like
    its color, which the UNet learns from the prompt as easily as the color; the decoder
    learns to draw that shape crisply where the blob is. Normalized per channel."""
    parts = []
    for i in range(0, len(images), batch):
        chunk, drawn = images[i : i + batch], scenes[i : i + batch]
        codes = torch.tensor([SHAPE_CODES[s.shape] for s in drawn])[:, None, None, None]
        parts.append(torch.cat([F.avg_pool2d(to_unit(chunk), 4),
                                F.avg_pool2d(coverage(chunk, drawn), 4) * codes], dim=1))  # fmt: skip
    pooled = torch.cat(parts)
    mean = pooled.mean(dim=(0, 2, 3), keepdim=True)
    std = pooled.std(dim=(0, 2, 3), keepdim=True)
    return (pooled - mean) / std


def train_vae(
    vae: Any, images: torch.Tensor, targets: torch.Tensor, args: argparse.Namespace,
    gen: torch.Generator,
) -> Log:  # fmt: skip
    """The encoder learns to output ``targets``; the decoder learns to redraw the image from
    them, slightly noised so it forgives a UNet's imperfect latents."""
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    log = Log("vae", args.vae_steps, args.log_every)
    vae.train()
    order = batches(len(images), args.vae_batch, gen)
    for step in range(args.vae_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.vae_steps, args.vae_lr)
        idx = next(order)
        x, z = to_unit(images[idx]), targets[idx]
        encoded = vae.encode(x).latent_dist.mean
        sigma = args.latent_noise * torch.rand(len(idx), 1, 1, 1, generator=gen)
        recon = vae.decode(z + sigma * torch.randn(z.shape, generator=gen)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + F.mse_loss(encoded, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log.add(step, loss.item())
    with torch.no_grad():  # the encoder is deterministic: its log-variance is a constant -20
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -20.0
    vae.eval()
    return log


def train_unet(
    unet: Any,
    text_encoder: Any,
    scheduler: Any,
    latents: torch.Tensor,
    ids: torch.Tensor,
    empty_ids: torch.Tensor,
    args: argparse.Namespace,
    gen: torch.Generator,
    checkpoint: Any = None,
) -> tuple[Log, Any, Any]:
    """Denoising with v-prediction and clamped min-SNR weighting; returns the EMA copies."""
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    alphas = scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    # min-SNR-5 (less weight on nearly clean steps), but never less than plain v-prediction
    # at high noise, where the layout (and so the count) of a picture is decided.
    weight = snr.clamp(min=1.0, max=5.0) / (snr + 1)
    log = Log("unet", args.unet_steps, args.log_every)
    unet.train()
    text_encoder.train()
    order = batches(len(latents), args.unet_batch, gen)
    for step in range(args.unet_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.unet_steps, args.unet_lr)
        idx = next(order)
        b = len(idx)
        x0 = latents[idx]
        drop = torch.rand(b, generator=gen) < args.uncond
        cond = torch.where(drop[:, None], empty_ids, ids[idx])
        t = torch.randint(0, len(alphas), (b,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].view(b, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        context = text_encoder(cond)[0]
        pred = unet(noisy, t, encoder_hidden_states=context).sample
        per_item = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (weight[t] * per_item).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema_params, params, strict=True):
                e.lerp_(p, 1 - decay)
        log.add(step, loss.item())
        if checkpoint is not None:
            checkpoint(step + 1, ema_unet, ema_text)
    return log, ema_unet, ema_text


# -- saving ------------------------------------------------------------------------------------


def save_pipeline(out: Path, components: dict[str, Any]) -> None:
    """A standard StableDiffusionPipeline folder; UNet and VAE weights stored as float16
    (diffusers loads them as float32 unless told otherwise), the text encoder as float32."""
    from diffusers import StableDiffusionPipeline

    from impasto.diffusers.pipelines import quiet

    components = dict(components)
    out.mkdir(parents=True, exist_ok=True)
    with quiet():
        for name in ("unet", "vae"):
            components[name] = copy.deepcopy(components[name]).to(torch.float16)
        pipe = StableDiffusionPipeline(
            **components,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(out, safe_serialization=True)


def write_checksums(out: Path) -> Path:
    """``SHA256SUMS`` next to the folder, in ``sha256sum -c`` format (paths from its parent)."""
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(out.parent).as_posix()}")
    sums = out.parent / "SHA256SUMS"
    sums.write_text("\n".join(lines) + "\n")
    return sums


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    wall, cpu = time.perf_counter(), time.process_time()

    tok = build_tokenizer()
    images, ids, drawn = make_dataset(args.images, args.seed, tok)
    empty_ids = tokenize(tok, [""])
    print(f"dataset: {len(images)} scenes in {time.perf_counter() - wall:.0f} s", flush=True)

    torch.manual_seed(args.seed)
    latents = latent_targets(images, drawn)
    if args.vae:
        from diffusers import AutoencoderKL

        vae, vae_log = AutoencoderKL.from_pretrained(args.vae, torch_dtype=torch.float32), None
    else:
        vae = build_vae()
        vae_log = train_vae(vae, images, latents, args, gen)
        # Written now, so it can be checked (or reused with --vae) while the UNet trains.
        copy.deepcopy(vae).to(torch.float16).save_pretrained(args.out / "vae")

    torch.manual_seed(args.seed + 1)
    unet, text_encoder, scheduler = build_unet(), build_text_encoder(tok), build_scheduler()
    save_at = {int(n) for n in args.save_at.split(",") if n.strip()}

    def checkpoint(step: int, ema_unet: Any, ema_text: Any) -> None:
        if step in save_at:
            out = args.out.with_name(f"{args.out.name}-step{step}")
            parts = {"unet": ema_unet, "vae": vae, "text_encoder": ema_text}
            save_pipeline(out, {**parts, "tokenizer": tok, "scheduler": scheduler})

    if args.unet:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet_log = None
        ema_unet = UNet2DConditionModel.from_pretrained(
            args.unet / "unet", torch_dtype=torch.float32
        )
        ema_text = CLIPTextModel.from_pretrained(args.unet / "text_encoder")
    else:
        unet_log, ema_unet, ema_text = train_unet(
            unet, text_encoder, scheduler, latents, ids, empty_ids, args, gen, checkpoint
        )

    save_pipeline(
        args.out,
        {"unet": ema_unet, "vae": vae, "text_encoder": ema_text, "tokenizer": tok,
         "scheduler": scheduler},
    )  # fmt: skip
    write_checksums(args.out)
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "parameters": {
            name: sum(p.numel() for p in module.parameters())
            for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
        },
        "vae_loss": vae_log.points if vae_log else None,
        "unet_loss": unet_log.points if unet_log else None,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }
    (args.out.parent / "training.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {args.out} in {report['wall_seconds']} s ({report['cpu_seconds']} s CPU)")
    return report


if __name__ == "__main__":
    main()
