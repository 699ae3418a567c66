"""The editor: an InstructPix2Pix pipeline's parts (VAE, CLIP text encoder, 8-channel UNet, scheduler),
either loaded from a pretrained pipeline (folder or hub id) or built random in code with no download
(`tiny`, about 1M UNet parameters, what the tests use; `sd15-random`, Stable Diffusion 1.5's layout, for
benchmarks and scale checks), plus the optional pose branch: the target 17-keypoint pose, rendered as
a skeleton image, through a small encoder whose zero-initialised output is added after the UNet's first
convolution (ControlNet-style: at step 0 the model is exactly the one it started from)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .tokenizer import build_tokenizer


@dataclass
class EditorParts:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDPMScheduler
    pose_encoder: PoseEncoder | None = None

    def pipeline(self) -> StableDiffusionInstructPix2PixPipeline:
        return StableDiffusionInstructPix2PixPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def build_tiny(seed: int = 0, resolution: int = 64) -> EditorParts:
    """A tiny random InstructPix2Pix (about 1M UNet parameters): no download, trains on a CPU."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            eos_token_id=eos,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            pad_token_id=eos,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=resolution // 2,
        in_channels=8,  # noisy latent + encoded before-image
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=resolution,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    return EditorParts(unet, vae, text_encoder, tokenizer, scheduler)


def build_sd15_random(seed: int = 0, resolution: int = 512) -> EditorParts:
    """Stable Diffusion 1.5's layout with random weights (UNet ~860M parameters with 8 input channels,
    the 83M VAE, CLIP ViT-L/14's 123M text encoder): the real cost of a training step, no download. The
    text side uses the built-in tokenizer (its ids fit in CLIP's 49,408-token embedding)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            eos_token_id=eos,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            pad_token_id=eos,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=resolution // 8,
        in_channels=8,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=resolution,
        scaling_factor=0.18215,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return EditorParts(unet, vae, text_encoder, tokenizer, scheduler)


RANDOM_MODELS = {"tiny": build_tiny, "sd15-random": build_sd15_random}


def build_editor(pretrained: str, seed: int = 0, resolution: int = 64) -> EditorParts:
    """`--pretrained`: a random model built in code (RANDOM_MODELS) or a pipeline folder / hub id."""
    if pretrained in RANDOM_MODELS:
        return RANDOM_MODELS[pretrained](seed, resolution)
    if "/" not in pretrained and not Path(pretrained).exists():  # neither a folder nor an org/name hub id
        raise ValueError(
            f"--pretrained {pretrained!r}: not a folder, a hub id (org/name) or one of {', '.join(RANDOM_MODELS)}"
        )
    return load_pretrained(pretrained)


def load_pretrained(path_or_id: str) -> EditorParts:
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(path_or_id, safety_checker=None)
    unet = pipe.unet
    if unet.config.in_channels != 8:
        raise ValueError(f"{path_or_id}: UNet has {unet.config.in_channels} input channels; InstructPix2Pix needs 8")
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return EditorParts(unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler)


def freeze_cross_attention(unet: UNet2DConditionModel) -> list[str]:
    """EditAction's memory saver: the text cross-attention layers (attn2) stop learning."""
    frozen = []
    for name, p in unet.named_parameters():
        if ".attn2." in name:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


# ---------------------------------------------------------------- pose conditioning

# COCO-17 limbs for drawing the skeleton
LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 6), (11, 12), (5, 11), (6, 12)]
LIMBS += [(0, 1), (0, 2), (1, 3), (2, 4)]


def render_pose(keypoints: torch.Tensor, size: int, min_conf: float = 0.3) -> torch.Tensor:
    """(B, 17, 3) keypoints in [0, 1] image coordinates -> (B, len(LIMBS), size, size) limb maps: each
    channel is a soft line of one limb (differentiable-free, computed on the fly)."""
    b = keypoints.shape[0]
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, size, device=keypoints.device),
        torch.linspace(0, 1, size, device=keypoints.device),
        indexing="ij",
    )
    grid = torch.stack([xs, ys], -1).view(1, 1, size, size, 2)
    a = keypoints[:, [i for i, _ in LIMBS]]  # (B, L, 3)
    c = keypoints[:, [j for _, j in LIMBS]]
    pa, pc = a[..., :2].view(b, -1, 1, 1, 2), c[..., :2].view(b, -1, 1, 1, 2)
    d = pc - pa
    t = (((grid - pa) * d).sum(-1) / (d.pow(2).sum(-1) + 1e-6)).clamp(0, 1)
    dist = (grid - (pa + t.unsqueeze(-1) * d)).norm(dim=-1)
    ok = ((a[..., 2] >= min_conf) & (c[..., 2] >= min_conf)).float().view(b, -1, 1, 1)
    ok = ok * torch.isfinite(pa).all(-1).float() * torch.isfinite(pc).all(-1).float()
    maps = torch.exp(-(dist.nan_to_num(1e3) ** 2) / (2 * (1.5 / size) ** 2))
    return maps * ok


class PoseEncoder(nn.Module):
    """Rendered target skeleton -> features at the UNet's first-conv resolution, via a zero-initialised
    output convolution (so enabling it changes nothing until it learns)."""

    def __init__(self, out_channels: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(len(LIMBS), hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.SiLU(),
        )
        self.zero = nn.Conv2d(hidden, out_channels, 1)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, pose_maps: torch.Tensor) -> torch.Tensor:
        return self.zero(self.net(pose_maps))


class PoseConditionedConvIn(nn.Module):
    """Wraps unet.conv_in: conv_in(x) + pose features of the pose set for this forward pass."""

    def __init__(self, conv_in: nn.Conv2d, encoder: PoseEncoder):
        super().__init__()
        self.conv_in = conv_in
        self.encoder = encoder
        self.pose_maps: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        if self.pose_maps is not None:
            h = h + self.encoder(self.pose_maps.to(h.dtype))
        return h


def add_pose_branch(parts: EditorParts) -> PoseConditionedConvIn:
    conv_in = parts.unet.conv_in
    if isinstance(conv_in, PoseConditionedConvIn):
        return conv_in
    wrapper = PoseConditionedConvIn(conv_in, PoseEncoder(conv_in.out_channels))
    parts.unet.conv_in = wrapper
    parts.pose_encoder = wrapper.encoder
    return wrapper
