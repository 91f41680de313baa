"""`SPMUNet2DModel`: a class-conditional DDPM UNet whose bottleneck reads a support set of memory images.

The network follows the UNet of the authors' code (`nets/unet_spm.py`), written from scratch and sized by
named architectures (`UNET_ARCHITECTURES`): a ResBlock UNet with time and class conditioning whose middle block is the
semi-parametric block: the query's bottleneck patches attend to the *label-matched* support patches, and the
bottleneck output is built from what they read there. The support set comes from the sample memory, so
deleting a class's images from the memory removes what the model can read for that class.

Data flow for a batch of B noisy queries and S support images::

    queries  --conv_in--down path (skips kept)--res_pre--+
                                                         |  relation attention, per label group:
    support  --conv_in--down path (no skips)--res_pre----+  query patches -> support patches with the same label
             (clean, at the fixed `support_timestep`,    |
              null class embedding, no gradient)         +--> fused --res_post--up path (queries only)--> eps

Deliberate deviations from the reference code (each is documented where it lives):

1. **Support encoding is query-independent.** The reference gives the support the query's timestep at
   sampling but an independent random timestep (with noise) in training (a train/test mismatch), and
   the support's own (permuted) class embedding. Here the support is always encoded clean at the fixed
   `support_timestep` (default 0) with the null class embedding, in training and sampling alike. The
   class embedding carries no class identity anyway (labels are permuted per batch), and the label is
   still used for matching. This makes a support item's features a function of the image and the
   weights only, so `SPMDiffusionPipeline` computes them once and caches them (the support path runs at
   most once per call, not per step, guidance branch or sample).
2. **No fallback inside the block.** A query whose label has no support gets zero fused features, in
   training and evaluation alike (the reference falls back to all supports in eval mode only, which makes
   a query's output depend on the other queries of the batch). What to draw for a forgotten class is a
   pipeline policy (`forget_policy`), decided before the UNet runs.
3. **Relation attention.** `relation="additive"` is the reference's additive attention
   (score = w_outᵀ ReLU(W_q q + W_s s + b) + b_out, value = W_s s); `relation="dot"` (default of the CPU
   architectures) is scaled dot-product attention with separate key/value projections and `relation_heads`
   heads: the additive form costs O(P · S·P · hidden) memory per query, which is what makes the
   reference 35x slower at 1,024 support items. Both normalise the bottleneck features (GroupNorm) before
   projecting and project the result back to the bottleneck width, so any hidden size works (the
   reference's spatial relation block only runs when its hidden size equals the bottleneck width).
4. **ResBlock modulation** is `h * (1 + time_proj(t)) + class_proj(c)` (the reference uses
   `time_proj(t) * h + class_proj(c)`): identical expressiveness, a better-behaved start.
5. The class embedding is an `nn.Embedding(num_class_embeds + 1)` whose last row is the null class used by
   classifier-free guidance (the reference multiplies a one-hot vector by the keep mask, equivalent up to
   parametrisation).
6. **Memory-derived class embedding** (`support_class_embedding=True`, the CPU architectures). With labels
   permuted per batch the class embedding carries no class identity, and in the reference the class reaches
   the network only through the 4x4 bottleneck, which the decoder can ignore in favour of the skip
   connections: trained for 4,000 CPU steps, our `mnist-cpu` model drew the same digits whatever the
   support (mean pixel change 0.005 with vs without support). The detached bottleneck values, averaged
   into the class modulation, do not carry the class either: with them, the loss with every support item
   relabelled as another class equals the loss with the right support. So a small exemplar encoder (three
   convolutions, mean pool, linear; trained end to end, unlike the detached bottleneck path) embeds each
   support image; per query, the unit direction of the mean unit embedding of the items labelled like the
   query (`label_directions`), scaled to norm sqrt(E), goes through SiLU + linear and is added to the class
   embedding, which modulates every ResBlock. It is read from the memory only, so deleting a class's items
   removes it; a label with no item, and the guidance-dropped branch, get the zero prototype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.utils import BaseOutput
from torch import nn


# Named UNet configurations. Training presets (`spm_hf.training.generator_presets`, named `gen-*`) pick one by
# name; the names here are architectures, not training recipes.
UNET_ARCHITECTURES: dict[str, dict] = {
    # Unit tests: 8x8 images, a few thousand parameters, a training step in milliseconds.
    "unet-tiny": dict(
        sample_size=8,
        in_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(),
        norm_num_groups=8,
        dropout=0.0,
        relation="dot",
        relation_heads=1,
        relation_dim=32,
        relation_pool_size=None,
        support_class_embedding=True,
    ),
    # 28x28 MNIST digits on a CPU: 28 -> 14 -> 7, the bottleneck's 49 patches attend to the support.
    # 0.7 M parameters; about 0.13 s per training step (batch 32 + support 32) on one CPU thread.
    "unet-mnist-cpu": dict(
        sample_size=28,
        in_channels=1,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        attention_levels=(2,),
        norm_num_groups=8,
        dropout=0.0,
        relation="dot",
        relation_heads=2,
        relation_dim=64,
        relation_pool_size=None,
        support_class_embedding=True,
    ),
    # 32x32 CIFAR-10 on a CPU: 32 -> 16 -> 8, bottleneck pooled to 4x4 patches as in the paper.
    # 3.7 M parameters; about 0.8 s per training step (batch 32 + support 32) on one CPU thread.
    "unet-cifar10-cpu": dict(
        sample_size=32,
        in_channels=3,
        block_out_channels=(48, 96, 128),
        layers_per_block=1,
        attention_levels=(2,),
        norm_num_groups=16,
        dropout=0.0,
        relation="dot",
        relation_heads=2,
        relation_dim=128,
        relation_pool_size=4,
        support_class_embedding=True,
    ),
    # The paper's UNet: 128 channels x [1, 2, 2, 2], attention at 16x16, 2 blocks per
    # level, dropout 0.1, GroupNorm(32), additive relation attention over 4x4 bottleneck patches.
    "unet-cifar10-paper": dict(
        sample_size=32,
        in_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        attention_levels=(1,),
        norm_num_groups=32,
        dropout=0.1,
        relation="additive",
        relation_heads=1,
        relation_dim=256,
        relation_pool_size=4,
    ),
}


def label_directions(labels: torch.Tensor, support_labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """(L,) labels, (S,) support labels, (S, E) exemplar embeddings -> (L, E): the unit direction of the mean unit
    embedding of the support items carrying each label; zeros where none does. What the UNet is conditioned on
    (`SPMUNet2DModel.support_prototypes`) and what the exemplar loss trains the encoder for."""
    match = (labels[:, None] == support_labels[None, :]).to(embeddings.dtype)  # (L, S)
    mean = match @ F.normalize(embeddings, dim=-1) / match.sum(dim=1, keepdim=True).clamp_min(1)
    return F.normalize(mean, dim=-1)


@dataclass
class SPMUNet2DOutput(BaseOutput):
    """`sample`: (B, C, H, W) predicted noise for the queries."""

    sample: torch.Tensor


@dataclass
class SupportFeatures:
    """Projected support patches, ready for the relation attention; what the pipeline caches.

    Attributes:
        keys: (S, P, D) attention keys of the S support items' P bottleneck patches.
        values: (S, P, D) attention values (the same tensor as `keys` for additive attention).
        labels: (S,) int64 labels used for matching (the group each support item serves).
    """

    keys: torch.Tensor
    values: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor | None = None  # (S, E) exemplar embeddings (`support_class_embedding` only)

    def __len__(self) -> int:
        return self.keys.shape[0]

    @classmethod
    def empty(cls, num_patches: int, dim: int, device=None, dtype=torch.float32) -> SupportFeatures:
        z = torch.zeros(0, num_patches, dim, device=device, dtype=dtype)
        return cls(z, z, torch.zeros(0, dtype=torch.long, device=device))

    def repeat(self, times: int) -> SupportFeatures:
        """The support duplicated `times` times (what the reference does per guidance branch)."""
        embeddings = None if self.embeddings is None else self.embeddings.repeat(times, 1)
        return SupportFeatures(self.keys.repeat(times, 1, 1), self.values.repeat(times, 1, 1), self.labels.repeat(times),
                               embeddings)


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """GN-SiLU-conv, GN, modulation `h * (1 + scale(t)) + shift(c)`, SiLU-dropout-conv, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.time_proj = nn.Linear(emb_dim, out_ch)
        self.class_proj = nn.Linear(emb_dim, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cemb: torch.Tensor) -> torch.Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        h = h * (1 + self.time_proj(F.silu(temb))[:, :, None, None]) + self.class_proj(F.silu(cemb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.shortcut(x)


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual (the DDPM UNet's attention block)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(out).transpose(1, 2).reshape(b, c, h, w)


class RelationAttention(nn.Module):
    """Label-matched spatial relation attention from query patches to support patches (the semi-parametric read).

    Each query's P bottleneck patches attend to all patches of the support items that carry the query's
    label; the output is the attention-weighted sum of projected support patches, projected back to the
    bottleneck width. A query whose label has no support item gets zeros.
    """

    def __init__(self, channels: int, dim: int, heads: int, kind: str, groups: int):
        super().__init__()
        if kind not in ("dot", "additive"):
            raise ValueError(f"relation must be 'dot' or 'additive', got {kind!r}")
        if kind == "dot" and dim % heads:
            raise ValueError(f"relation_dim {dim} must be divisible by relation_heads {heads}")
        self.kind, self.dim, self.heads = kind, dim, heads if kind == "dot" else 1
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.to_q = nn.Linear(channels, dim)
        self.to_k = nn.Linear(channels, dim)
        if kind == "dot":
            self.to_v = nn.Linear(channels, dim)
        else:
            self.score = nn.Linear(dim, 1)  # w_out, b_out of the additive score; to_q's bias is b
        self.to_out = nn.Linear(dim, channels)

    def patches(self, feats: torch.Tensor, pool: int | None) -> torch.Tensor:
        """(N, C, h, w) features -> (N, P, C) normalised patches (pooled to pool x pool if given)."""
        feats = self.norm(feats)
        if pool is not None and tuple(feats.shape[-2:]) != (pool, pool):
            feats = F.adaptive_avg_pool2d(feats, pool)
        return feats.flatten(2).transpose(1, 2)

    def project_support(self, patches: torch.Tensor, labels: torch.Tensor) -> SupportFeatures:
        keys = self.to_k(patches)
        values = self.to_v(patches) if self.kind == "dot" else keys
        return SupportFeatures(keys, values, labels)

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """q (n, P, D); keys/values (M, D) -> (n, P, D)."""
        if self.kind == "dot":
            n, p, d = q.shape
            h, dh = self.heads, d // self.heads
            qh = q.view(n, p, h, dh).transpose(1, 2)  # (n, h, P, dh)
            kh = keys.view(1, -1, h, dh).transpose(1, 2).expand(n, h, -1, dh)
            vh = values.view(1, -1, h, dh).transpose(1, 2).expand(n, h, -1, dh)
            return F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(n, p, d)
        # additive: score(p, j) = w_out . relu(q_p + k_j) + b_out, chunked over the support patches
        # to bound memory at O(n * P * chunk * D).
        scores = []
        chunk = max(1, 2**22 // max(1, q.shape[0] * q.shape[1] * q.shape[2]))
        for start in range(0, keys.shape[0], chunk):
            k = keys[start : start + chunk]
            scores.append(self.score(F.relu(q[:, :, None, :] + k[None, None, :, :])).squeeze(-1))
        attn = torch.cat(scores, dim=-1).softmax(dim=-1)  # (n, P, M)
        return attn @ values

    def forward(
        self, q_patches: torch.Tensor, q_labels: torch.Tensor, support: SupportFeatures | None
    ) -> torch.Tensor:
        """q_patches (B, P, C) -> (B, P, C)."""
        out = torch.zeros(
            q_patches.shape[0], q_patches.shape[1], self.dim, device=q_patches.device, dtype=q_patches.dtype
        )
        if support is None or len(support) == 0:
            return self.to_out(out) * 0.0  # zero fused features, same graph shape
        q = self.to_q(q_patches)
        s_labels = support.labels.to(q_labels.device)
        for label in torch.unique(q_labels).tolist():
            q_rows = torch.nonzero(q_labels == label).flatten()
            s_rows = torch.nonzero(s_labels == label).flatten()
            if s_rows.numel() == 0:
                continue  # no support for this label: zero features (documented policy)
            keys = support.keys[s_rows].reshape(-1, self.dim).to(q.dtype)
            values = support.values[s_rows].reshape(-1, self.dim).to(q.dtype)
            out = out.index_copy(0, q_rows, self._attend(q[q_rows], keys, values).to(out.dtype))
        missing = ~torch.isin(q_labels, s_labels)
        fused = self.to_out(out)
        if missing.any():
            fused = fused.masked_fill(missing[:, None, None], 0.0)
        return fused


class SemiParametricMiddleBlock(nn.Module):
    """res_pre (queries and support) -> relation attention (per label) -> upsample -> res_post (queries)."""

    def __init__(self, channels, emb_dim, groups, dropout, relation, heads, dim, pool, query_residual):
        super().__init__()
        self.res_pre = ResBlock(channels, channels, emb_dim, groups, dropout)
        self.relation = RelationAttention(channels, dim, heads, relation, groups)
        self.res_post = ResBlock(channels, channels, emb_dim, groups, dropout)
        self.pool = pool
        self.query_residual = query_residual

    def forward(self, h, temb, cemb, labels, support: SupportFeatures | None) -> torch.Tensor:
        mid = self.res_pre(h, temb, cemb)
        patches = self.relation.patches(mid, self.pool)
        fused = self.relation(patches, labels, support)  # (B, P, C)
        side = int(math.isqrt(fused.shape[1]))
        fused = fused.transpose(1, 2).reshape(h.shape[0], h.shape[1], side, side)
        if (side, side) != tuple(h.shape[-2:]):
            fused = F.interpolate(fused, size=h.shape[-2:], mode="nearest")
        if self.query_residual:
            fused = fused + mid
        return self.res_post(fused, temb, cemb)


class SPMUNet2DModel(ModelMixin, ConfigMixin):
    """A class-conditional DDPM UNet with a semi-parametric bottleneck (docs/method.md, "The generator").

    Args:
        sample_size: image side (square images).
        in_channels / out_channels: image channels (out defaults to in).
        num_class_embeds: number of classes K; the class embedding has K + 1 rows, row K is the null class.
        block_out_channels: channels per resolution level; each level but the last halves the resolution.
        layers_per_block: ResBlocks per level on the down path (one more on the up path).
        attention_levels: levels (indices into `block_out_channels`) with spatial self-attention.
        norm_num_groups: GroupNorm groups (reduced to a divisor of each width).
        dropout: ResBlock dropout.
        relation: `"dot"` or `"additive"` relation attention (see the module docstring).
        relation_heads / relation_dim: attention heads and projection width.
        relation_pool_size: pool the bottleneck to this many patches per side before attending (None: one
            patch per bottleneck pixel). The paper pools to 4x4.
        support_timestep: timestep at which the (clean) support is encoded; fixed, so support features are
            independent of the query's timestep and cacheable.
        query_residual: add the query's own bottleneck features to the fused ones. False in the paper (the
            bottleneck output is purely support-derived); kept as an option.
        support_class_embedding: also condition every ResBlock on the memory: a small exemplar encoder
            (`support_encoder`) embeds each support image; per query, the unit direction of the mean unit
            embedding of the support items labelled like the query, scaled to norm sqrt(E)
            (`support_prototypes`; zeros where no item carries the label, and in the guidance-dropped
            branch), goes through SiLU + linear (`support_embedding`) and is added to the class embedding
            (module docstring, deviation 6). False in the paper.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int | None = None,
        num_class_embeds: int = 10,
        block_out_channels: tuple[int, ...] = (48, 96, 128),
        layers_per_block: int = 1,
        attention_levels: tuple[int, ...] = (2,),
        norm_num_groups: int = 16,
        dropout: float = 0.0,
        relation: str = "dot",
        relation_heads: int = 2,
        relation_dim: int = 128,
        relation_pool_size: int | None = 4,
        support_timestep: int = 0,
        query_residual: bool = False,
        support_class_embedding: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        chs = list(block_out_channels)
        emb_dim = chs[0] * 4
        self.time_proj = Timesteps(chs[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(chs[0], emb_dim)
        self.class_embedding = nn.Embedding(num_class_embeds + 1, emb_dim)
        # Deviation 6: a small exemplar encoder, trained end to end, whose mean over the label-matched support
        # items conditions every ResBlock (None: the paper's UNet).
        self.support_encoder = (
            nn.Sequential(
                nn.Conv2d(in_channels, chs[0], 3, padding=1), nn.SiLU(),
                nn.Conv2d(chs[0], 2 * chs[0], 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(2 * chs[0], 2 * chs[0], 3, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * chs[0], emb_dim),
            )
            if support_class_embedding else None
        )
        self.support_embedding = (
            nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if support_class_embedding else None
        )
        self.conv_in = nn.Conv2d(in_channels, chs[0], 3, padding=1)

        attn = set(attention_levels)
        self.down = nn.ModuleList()
        skip_chs = [chs[0]]
        ch = chs[0]
        for level, width in enumerate(chs):
            for _ in range(layers_per_block):
                self.down.append(ResBlock(ch, width, emb_dim, norm_num_groups, dropout))
                ch = width
                if level in attn:
                    self.down.append(SelfAttention(ch, norm_num_groups))
                skip_chs.append(ch)
            if level != len(chs) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_chs.append(ch)

        self.mid = SemiParametricMiddleBlock(
            ch, emb_dim, norm_num_groups, dropout, relation, relation_heads, relation_dim, relation_pool_size,
            query_residual,
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(chs))):
            width = chs[level]
            for _ in range(layers_per_block + 1):
                self.up.append(ResBlock(ch + skip_chs.pop(), width, emb_dim, norm_num_groups, dropout))
                ch = width
                if level in attn:
                    self.up.append(SelfAttention(ch, norm_num_groups))
            if level != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.norm_out = nn.GroupNorm(_groups(ch, norm_num_groups), ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_architecture(cls, architecture: str, **overrides) -> SPMUNet2DModel:
        """A freshly initialised UNet of `UNET_ARCHITECTURES[architecture]`, with config overrides."""
        if architecture not in UNET_ARCHITECTURES:
            raise ValueError(
                f"unknown UNet architecture {architecture!r}; choose one of {', '.join(UNET_ARCHITECTURES)}"
            )
        return cls(**{**UNET_ARCHITECTURES[architecture], **overrides})

    @property
    def null_class(self) -> int:
        return self.config.num_class_embeds

    @property
    def num_patches(self) -> int:
        pool = self.config.relation_pool_size
        if pool is not None:
            return pool * pool
        side = self.config.sample_size // 2 ** (len(self.config.block_out_channels) - 1)
        return side * side

    # ------------------------------------------------------------------ embeddings
    def _embed(self, timestep, batch: int, class_labels, device, dtype):
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch) if t.numel() == 1 else t
        temb = self.time_embedding(self.time_proj(t).to(dtype))
        cemb = self.class_embedding(class_labels)
        return temb, cemb

    def _down(self, x, temb, cemb, keep_skips: bool):
        h = self.conv_in(x)
        skips = [h] if keep_skips else None
        for module in self.down:
            if isinstance(module, ResBlock):
                h = module(h, temb, cemb)
            else:
                h = module(h)
            if keep_skips and not isinstance(module, SelfAttention):
                skips.append(h)
            elif keep_skips and isinstance(module, SelfAttention):
                skips[-1] = h
        return h, skips

    # ------------------------------------------------------------------ support path
    def encode_support_patches(self, support_images: torch.Tensor) -> torch.Tensor:
        """(S, C, H, W) images in [-1, 1] -> (S, P, C_mid) normalised bottleneck patches, without gradient.

        The support runs through `conv_in`, the down path and the middle block's first ResBlock with the
        queries' weights, clean, at the fixed `support_timestep`, with the null class embedding (see the
        module docstring, deviation 1). No gradient flows into the support branch (as in the reference,
        which detaches the support features); the key/value projections applied afterwards do train.
        """
        with torch.no_grad():
            n = support_images.shape[0]
            dtype = self.conv_in.weight.dtype
            x = support_images.to(device=self.conv_in.weight.device, dtype=dtype)
            null = torch.full((n,), self.null_class, dtype=torch.long, device=x.device)
            temb, cemb = self._embed(self.config.support_timestep, n, null, x.device, dtype)
            h, _ = self._down(x, temb, cemb, keep_skips=False)
            mid = self.mid.res_pre(h, temb, cemb)
            return self.mid.relation.patches(mid, self.mid.pool)

    def encode_support(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> SupportFeatures:
        """The full support path: images -> projected keys/values (what a cache may store)."""
        labels = torch.as_tensor(support_labels, dtype=torch.long, device=self.conv_in.weight.device)
        if support_images.shape[0] == 0:
            return SupportFeatures.empty(self.num_patches, self.config.relation_dim, labels.device, self.dtype)
        feats = self.mid.relation.project_support(self.encode_support_patches(support_images), labels)
        if self.support_encoder is not None:
            x = support_images.to(device=self.conv_in.weight.device, dtype=self.conv_in.weight.dtype)
            feats.embeddings = self.support_encoder(x)
        return feats

    def support_prototypes(self, labels: torch.Tensor, support: SupportFeatures | None, dtype) -> torch.Tensor:
        """(B,) query labels -> (B, E): the mean unit exemplar embedding of the support items labelled like
        each query, renormalised to norm sqrt(E); zeros where no item carries the label."""
        width = self.support_embedding[-1].in_features
        if support is None or len(support) == 0:
            return torch.zeros(labels.shape[0], width, device=labels.device, dtype=dtype)
        if support.embeddings is None:
            raise ValueError("this UNet conditions on exemplar embeddings: build the support with encode_support")
        directions = label_directions(labels, support.labels.to(labels.device), support.embeddings.to(dtype))
        # Unit directions scaled to norm sqrt(E): the class is in the direction (every exemplar embedding also
        # shares a large common component, which unnormalised made classes differ by ~6 % of the norm).
        return directions * math.sqrt(directions.shape[-1])

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        class_labels: torch.Tensor,
        support: SupportFeatures | None = None,
        support_images: torch.Tensor | None = None,
        support_labels: torch.Tensor | None = None,
        class_dropout_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SPMUNet2DOutput | tuple:
        """Predict the noise of `sample` at `timestep`.

        Args:
            sample: (B, C, H, W) noisy queries.
            timestep: int or (B,) timesteps.
            class_labels: (B,) class indices. Used for support matching always, and for the class
                embedding unless dropped.
            support: precomputed `SupportFeatures` (from `encode_support`, e.g. a cache).
            support_images / support_labels: (S, C, H, W) images in [-1, 1] and (S,) labels, encoded here
                (mutually exclusive with `support`).
            class_dropout_mask: (B,) bool; True replaces the class embedding by the null class (guidance
                label dropout / the unconditional branch). The support is kept.
        """
        if support is not None and support_images is not None:
            raise ValueError("pass either support (precomputed features) or support_images, not both")
        if support_images is not None:
            if support_labels is None:
                raise ValueError("support_images needs support_labels")
            support = self.encode_support(support_images, support_labels)
        batch = sample.shape[0]
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=sample.device).reshape(-1)
        if labels.numel() != batch:
            raise ValueError(f"class_labels has {labels.numel()} entries for a batch of {batch}")
        embed_labels = labels
        if class_dropout_mask is not None:
            embed_labels = torch.where(class_dropout_mask.to(sample.device), torch.full_like(labels, self.null_class), labels)
        temb, cemb = self._embed(timestep, batch, embed_labels, sample.device, sample.dtype)
        if self.support_embedding is not None:
            prototypes = self.support_prototypes(labels, support, sample.dtype)
            if class_dropout_mask is not None:
                # the unconditional branch sees what a label with no memory sees: a zero prototype
                prototypes = prototypes.masked_fill(class_dropout_mask.to(sample.device)[:, None], 0.0)
            cemb = cemb + self.support_embedding(prototypes)

        h, skips = self._down(sample, temb, cemb, keep_skips=True)
        h = self.mid(h, temb, cemb, labels, support)
        for module in self.up:
            if isinstance(module, ResBlock):
                h = module(torch.cat([h, skips.pop()], dim=1), temb, cemb)
            else:
                h = module(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if not return_dict:
            return (out,)
        return SPMUNet2DOutput(sample=out)
