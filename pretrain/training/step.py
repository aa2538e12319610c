"""One optimisation step of ``attiqa-pretrain train``: build the batch, score it, the loss terms.

:class:`PretrainStep` is the ``step_fn`` that :func:`attiqa_train.loop.run_steps` calls:
every draw of step ``k`` comes from ``step_generator(seed, k, rank)``, so the batch
depends on ``(seed, step, rank)`` alone and a resumed run replays the same batches.

Batch layout: the synthetic groups (graded levels + one overlapping crop each), then the
adversarial twins (hardening, off by default), then CLIP-labelled crops, all ranked;
after them the anchors and edge pairs of the hardening (outside the ranking), scored in
the same forward pass. Large anchors (another size) get a second pass with BatchNorm on
its running statistics, and so does the input-gradient penalty (a double backward).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from attiqa_loss import ATTRIBUTES, AttiqaNet
from attiqa_train.optim import autocast
from attiqa_train.sampling import step_generator

from .config import RankingLossConfig
from .hardening import HardeningConfig
from .hardening_anchors import sample_anchors, sample_edge_pairs
from .hardening_terms import (adversarial_twins, alignment_loss, clipped_fix, edge_invariance_loss, edge_ranking_loss,
                              frozen_batchnorm, no_gain_loss, sensitivity_penalty)
from .objectives import calibration_loss, consistency_loss, pretrain_losses, specificity_loss
from .teachers import ClipLabelled

__all__ = ["Logits", "PretrainStep"]


class Logits(nn.Module):
    """Forward to logits, so DDP's hooks see the call that produces the loss."""

    def __init__(self, net: AttiqaNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x))


class PretrainStep:
    """``step -> (loss, terms)`` of one training step.

    Args:
        model: :class:`Logits` of the network, possibly wrapped in DDP (the ranked pass).
        plain: the same :class:`Logits` unwrapped (adversarial twins, large anchors).
        synthetic: the synthetic teacher or None; ``n_sources`` groups per batch.
        clip: the CLIP-labelled photos or None; ``n_clip`` crops per batch.
        loss: the loss weights and margins; hard: the hardening section.
        seed, rank: the step generator's seed and this process's rank.
        device, bf16: where and in which precision the forward passes run.
    """

    def __init__(self, model: nn.Module, plain: Logits, *, synthetic, n_sources: int, clip: Optional[ClipLabelled],
                 n_clip: int, loss: RankingLossConfig, hard: HardeningConfig, seed: int, rank: int,
                 device: torch.device, bf16: bool) -> None:
        self.model, self.plain = model, plain
        self.synthetic, self.n_sources, self.clip, self.n_clip = synthetic, n_sources, clip, n_clip
        self.loss, self.hard, self.seed, self.rank = loss, hard, seed, rank
        if hard.adversarial > 0 and hard.no_gain_clipped_fix and synthetic is None:
            raise ValueError("hardening.no_gain_clipped_fix needs the synthetic teacher (its groups' least degraded "
                             "level is what a twin's start is moved towards), got no synthetic teacher")
        if hard.alignment > 0 and synthetic is None:
            raise ValueError("hardening.alignment needs the synthetic teacher (its groups' least degraded level gives "
                             "the honest fix's direction), got no synthetic teacher")
        self.device, self.bf16 = device, bf16
        self.weights = {"ranking": loss.ranking, "calibration": loss.calibration, "consistency": loss.consistency,
                        "specificity": loss.specificity, "anchor": hard.anchor_weight,
                        "anchor_large": hard.anchor_weight, "edge": hard.anchor_weight,
                        "edge_invariance": hard.edge_invariance, "no_gain": hard.no_gain,
                        "sensitivity": hard.sensitivity_weight, "alignment": hard.alignment_weight}
        #: images scored so far (for the images/s figure)
        self.seen = 0

    def __call__(self, step: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        hard, synthetic, clip, device = self.hard, self.synthetic, self.clip, self.device
        g = step_generator(self.seed, step, self.rank)
        images, labels, groups, pairs, target = [], [], [], None, None
        if synthetic is not None:
            b = synthetic.sample(self.n_sources, g)
            images.append(b.images), labels.append(b.labels), groups.append(b.groups)
            pairs, target = b.pairs, b.target
        if clip is not None:
            xc, yc = clip.sample(self.n_clip, g)
            images.append(xc), labels.append(yc), groups.append(torch.full((len(xc),), -1))
        # Hardening (off by default: no extra draws from g, the same batches as before).
        # Adversarial twins follow the synthetic images (and share their groups, labels
        # and targets: specificity covers them); anchors and edge pairs come last, outside the ranking.
        pick = None
        if synthetic is not None:  # one of the graded levels of each group, never the pair crop
            gs = synthetic.group_size
            candidates = [i for i in range(len(b.labels)) if i % gs < gs - 1]
        else:
            candidates = list(range(self.n_clip))
        # The images the twins and the input-gradient penalty are drawn from (before the twins join).
        needs_src = hard.adversarial > 0 or hard.sensitivity > 0 or hard.alignment > 0
        src_x, src_target = (torch.cat(images), target) if needs_src else (None, None)
        if hard.adversarial > 0:
            src_y, src_g = torch.cat(labels), torch.cat(groups)
            pick, twins, attacked, radii = adversarial_twins(self.plain, hard, src_x, target, candidates, g, device,
                                                             self.bf16)
            at = 1 if synthetic is not None else len(images)
            images.insert(at, twins), labels.insert(at, src_y[pick]), groups.insert(at, src_g[pick])
            if target is not None:
                target = torch.cat([target, target[pick]])
        n_main = sum(len(t) for t in images)
        if hard.anchors > 0:
            anchor_x, anchor_y = sample_anchors(hard.anchors, images[0].shape[-1], g,
                                                smooth_noise_free=hard.smooth_noise_free,
                                                ramp_contrast=hard.ramp_contrast, full_labels=hard.full_labels)
            images.append(anchor_x)
        if hard.edge_pairs > 0:
            images.append(sample_edge_pairs(hard.edge_pairs, images[0].shape[-1], g))
        n_fix = 0
        if pick is not None and hard.no_gain_clipped_fix:
            # Each twin's start moved towards its group's least degraded level (the first of
            # the group), clipped to the twin's radius: scored in the same pass, after the
            # rest, as the twin's no-gain bound (no draws: the other images are unchanged).
            best = pick - pick % synthetic.group_size
            images.append(clipped_fix(src_x[pick], src_x[best], radii))
            n_fix = len(pick)
        if hard.large_anchors > 0:  # drawn last: the draws above are the same with or without them
            large_x, large_y = sample_anchors(hard.large_anchors, hard.large_anchor_size, g,
                                              smooth_noise_free=hard.smooth_noise_free,
                                              ramp_contrast=hard.ramp_contrast, full_labels=hard.full_labels)
        x = torch.cat([t.to(device, non_blocking=True) for t in images])
        y = torch.cat(labels).to(device)
        grp = torch.cat(groups).to(device)
        with autocast(self.bf16, device):
            logits = self.model(x)
        n_syn = 0 if synthetic is None else len(b.labels) + (0 if pick is None else len(pick))
        # (No slice without anchors: the same autograd graph, so the same float sums, as before.)
        ranked = logits if n_main == len(logits) else logits[:n_main]
        terms = pretrain_losses(ranked.float(), y, grp, margin=self.loss.margin, delta=self.loss.delta)
        if synthetic is not None:
            # The synthetic images (and their twins) come first; only they have pairs and targets.
            syn_scores = torch.sigmoid(logits[:n_syn].float())
            terms["consistency"] = consistency_loss(syn_scores, pairs.to(device))
            terms["specificity"] = specificity_loss(syn_scores, grp[:n_syn], target.to(device))
        if pick is not None:
            # ``pick`` indexes the first block (synthetic, else CLIP); the twins follow it.
            twin_at = len(b.labels) if synthetic is not None else self.n_clip
            scores = torch.sigmoid(logits.float())
            bound = scores[pick.to(device)]
            if n_fix:
                bound = torch.maximum(bound, scores[len(scores) - n_fix :])
            terms["no_gain"] = no_gain_loss(scores[twin_at : twin_at + len(pick)], bound,
                                            attacked if hard.no_gain_attacked_only else None)
        if hard.anchors > 0:
            terms["anchor"] = calibration_loss(logits[n_main : n_main + hard.anchors].float(), anchor_y.to(device))
        if hard.edge_pairs > 0:
            edge_logits = logits[n_main + hard.anchors : len(logits) - n_fix].float()
            terms["edge"] = edge_ranking_loss(edge_logits[:, ATTRIBUTES.index("sharpness")], hard.edge_margin)
            if hard.edge_invariance > 0:
                terms["edge_invariance"] = edge_invariance_loss(torch.sigmoid(edge_logits))
        if hard.large_anchors > 0:
            # Their size differs from the batch's, so a second forward pass, with BatchNorm
            # on its running statistics (not updated), as inference sees an image. Through
            # ``plain``, not the DDP wrapper (as the adversarial twins): DDP's hooks sit on
            # the parameters, so this pass's gradient joins the one all-reduce of the
            # backward below, and DDP's forward bookkeeping runs once per step.
            with frozen_batchnorm(self.plain), autocast(self.bf16, device):
                large_logits = self.plain(large_x.to(device, non_blocking=True))
            terms["anchor_large"] = calibration_loss(large_logits.float(), large_y.to(device))
        if hard.sensitivity > 0:  # drawn last (after the large anchors): the other draws are unchanged
            # Through ``plain`` with BatchNorm on its running statistics, as the large anchors.
            with autocast(self.bf16, device):
                terms["sensitivity"] = sensitivity_penalty(self.plain, hard, src_x, src_target, candidates, g, device)
        if hard.alignment > 0:  # drawn last: the other draws are unchanged
            # Levels with a better one in their group (not the group's first), never the pair crop.
            worse = [i for i in candidates if i % synthetic.group_size > 0]
            with autocast(self.bf16, device):
                terms["alignment"] = alignment_loss(self.plain, hard, src_x, src_target, worse,
                                                    synthetic.group_size, g, device)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        self.seen += len(x)
        return loss, terms
